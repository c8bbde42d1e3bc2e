// Replaced by the benchmark of its issue.
func benchSFrame(_ arguments: [String]) throws {
    throw BenchError.notBuilt("sframe")
}
