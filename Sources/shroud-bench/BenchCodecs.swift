// Replaced by the benchmark of its issue.
func benchCodecs(_ arguments: [String]) throws {
    throw BenchError.notBuilt("codecs")
}
