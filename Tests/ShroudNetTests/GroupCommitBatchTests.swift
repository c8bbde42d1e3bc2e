import Testing
@testable import ShroudNet

/// The group-commit limit: at most `framesPerCommit` frames under one store transaction.
@Suite struct GroupCommitBatchTests {
    @Test func batchesHoldAtMostTheLimitInArrivalOrder() {
        let limit = RelaySessionDriver.defaultFramesPerCommit
        let atLimit = Array(0..<limit)
        #expect(RelaySessionDriver.commitBatches(atLimit, framesPerCommit: limit) == [atLimit])
        let pastLimit = Array(0...limit)
        #expect(RelaySessionDriver.commitBatches(pastLimit, framesPerCommit: limit) == [Array(0..<limit), [limit]])
        #expect(RelaySessionDriver.commitBatches([Int](), framesPerCommit: limit).isEmpty)
        // One frame per commit (group commit off), and a nonsensical limit treated as one.
        #expect(RelaySessionDriver.commitBatches([1, 2, 3], framesPerCommit: 1) == [[1], [2], [3]])
        #expect(RelaySessionDriver.commitBatches([1, 2], framesPerCommit: 0) == [[1], [2]])
    }
}
