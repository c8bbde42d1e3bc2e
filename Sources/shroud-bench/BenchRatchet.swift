// Replaced by the benchmark of its issue.
func benchRatchet(_ arguments: [String]) throws {
    throw BenchError.notBuilt("ratchet")
}
