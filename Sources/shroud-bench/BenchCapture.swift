// Replaced by the benchmark of its issue.
func benchCapture(_ arguments: [String]) throws {
    throw BenchError.notBuilt("capture")
}
