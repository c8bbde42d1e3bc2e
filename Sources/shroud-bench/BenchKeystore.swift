// Replaced by the benchmark of its issue.
func benchKeystore(_ arguments: [String]) throws {
    throw BenchError.notBuilt("keystore")
}
