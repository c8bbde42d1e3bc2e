import Testing
import ShroudWire
@testable import ShroudCrypto

/// The relay checks blob sizes with ShroudWire's restatement of the bucket rule, because the relay
/// side may not import ShroudCrypto; this keeps the two rules identical.
@Suite struct PaddingAgreementTests {
    @Test func relayBucketRuleMatchesThePadding() {
        var size = 0
        while size <= BucketPadding.maximumPaddedSize + BucketPadding.largeBucketStep {
            #expect(SessionLimits.isPaddingBucket(size) == (size > 0 && BucketPadding.isBucket(size)), "\(size)")
            size += size < 70_000 ? 1 : 4093
        }
        #expect(SessionLimits.maximumBlobSize == BucketPadding.maximumPaddedSize)
    }
}
