import ShroudCrypto
import ShroudTestSupport
import ShroudWire
import Testing
@testable import ShroudMedia

@Suite("Screen key payloads")
struct ScreenKeyMessageTests {
    @Test func announcementAndRequestRoundTrip() throws {
        var random = SeededRandom(seed: 6)
        let key = MediaKeyAnnouncement.random(joining: false, random: &random)
        let payload = try ScreenKeyMessage.announcement(key).payload(sentAt: 42)
        #expect(payload.kind.rawValue == 0x20 && payload.sentAt == 42 && payload.body.count == MediaKeyAnnouncement.bodyLength)
        let parsed = try ChannelPayload(parsing: payload.serialize())
        #expect(try ScreenKeyMessage(parsed) == .announcement(key))
        let request = try ScreenKeyMessage.request.payload(sentAt: 7)
        #expect(request.kind.rawValue == 0x21 && request.body.isEmpty)
        #expect(try ScreenKeyMessage(try ChannelPayload(parsing: request.serialize())) == .request)
        // Voice keys and reserved screen kinds are not screen keys.
        #expect(try ScreenKeyMessage(try key.payload(sentAt: 1)) == nil)
        let reserved = try ChannelPayload(kind: try #require(ChannelPayload.Kind(rawValue: 0x2F)), sentAt: 1, body: [1, 2])
        #expect(try ScreenKeyMessage(reserved) == nil)
    }

    @Test func malformedAndTruncatedPayloadsThrow() throws {
        var random = SeededRandom(seed: 7)
        let body = MediaKeyAnnouncement.random(joining: false, random: &random).serialize()
        let kind20 = try #require(ChannelPayload.Kind(rawValue: 0x20)), kind21 = try #require(ChannelPayload.Kind(rawValue: 0x21))
        #expect(throws: (any Error).self) { try ScreenKeyMessage(try ChannelPayload(kind: kind20, sentAt: 0, body: Array(body.dropLast()))) }
        #expect(throws: (any Error).self) { try ScreenKeyMessage(try ChannelPayload(kind: kind20, sentAt: 0, body: body + [0])) }
        var joining = body
        joining[0] = MediaKeyAnnouncement.joiningFlag
        #expect(throws: MediaError.self) { try ScreenKeyMessage(try ChannelPayload(kind: kind20, sentAt: 0, body: joining)) }
        #expect(throws: MediaError.self) { try ScreenKeyMessage(try ChannelPayload(kind: kind21, sentAt: 0, body: [0])) }
    }

    @Test func answersAtMostOncePerInterval() {
        var limiter = KeyAnswerLimiter()
        let first = limiter.shouldAnswer(now: .seconds(5))
        let justBefore = limiter.shouldAnswer(now: .seconds(5) + ScreenKeyMessage.answerInterval - .milliseconds(1))
        let atTheInterval = limiter.shouldAnswer(now: .seconds(5) + ScreenKeyMessage.answerInterval)
        #expect(first && !justBefore && atTheInterval)
    }
}

/// A key provider holding one key, as both ends of a share (the ring is tested on its own).
private final class OneKey: MediaKeyProvider {
    var key: (keyID: UInt64, baseKey: SecureBytes)?
    var known = true
    init(_ id: UInt64) { key = (id, SecureBytes(copying: [UInt8](repeating: UInt8(truncatingIfNeeded: id), count: 32))) }
    func currentSendKey() -> (keyID: UInt64, baseKey: SecureBytes)? { key }
    func receiveKey(id: UInt64) -> SecureBytes? { known && id == key?.keyID ? key?.baseKey : nil }
}

@Suite("Screen sender and watcher")
struct ScreenPipelineTests {
    /// Datagrams of one layer (what the relay forwards to a watcher capped at that layer).
    private func layer(_ datagrams: [[UInt8]], _ layer: UInt8) throws -> [[UInt8]] {
        try datagrams.filter { try MediaRoutingHeader(parsing: $0).layer == layer }
    }

    @Test func aWatcherDecodesTheLayerItGetsAndMatchesTheScreen() throws {
        let keys = OneKey(0xABCDEF)
        let sender = try ScreenSender(top: .p720, fps: 30, streamBase: 64, keys: keys)
        let watcher = ScreenWatcher(keys: keys)
        let source = try textLikePicture(width: 1280, height: 720)
        var last: ScreenWatcher.Picture?
        var feedback: [[UInt8]] = []
        for index in 0 ..< 30 {
            let now = Duration.milliseconds(33 * index)
            let datagrams = try sender.datagrams(for: source)
            let headers = try datagrams.map { try MediaRoutingHeader(parsing: $0) }
            // Layer L on stream base + L, with L in the header.
            #expect(headers.allSatisfy { $0.streamID == 64 + UInt32($0.layer) })
            #expect(Set(headers.map(\.layer)) == [0, 1])
            for datagram in try layer(datagrams, 1) {
                let (pictures, replies) = try watcher.receive(datagram, now: now)
                feedback += replies
                if let picture = pictures.last { last = picture }
            }
        }
        let picture = try #require(last)
        #expect(picture.layer == 1 && picture.frame.width == 1280 && picture.frame.height == 720)
        let psnr = try PictureQuality(reference: source, reconstruction: picture.frame).lumaPSNR
        print("screen pipeline, 720p after 30 frames: \(psnr) dB")
        #expect(psnr >= 35)
        #expect(watcher.statistics.pictures == 30 && watcher.statistics.undecryptable == 0)
        // Receiver reports went out for the stream it gets.
        let reports = feedback.compactMap { try? ReceiverReport(parsing: $0) }
        #expect(!reports.isEmpty && reports.allSatisfy { $0.streamID == 65 && $0.fractionLost == 0 })
        let snapshot = watcher.snapshot(now: .milliseconds(33 * 29))
        #expect(snapshot.layer == 1 && snapshot.width == 1280 && snapshot.framesPerSecond == 30 && snapshot.bitsPerSecond > 0)
    }

    @Test func theStreamBaseLeavesRoomForEveryLayer() throws {
        let keys = OneKey(1)
        let last = UInt32.max - UInt32(MediaPacket.maxLayer)
        #expect(try ScreenSender(top: .p1080, fps: 30, streamBase: last, keys: keys).streamBase == last)
        #expect(throws: MediaError.self) { try ScreenSender(top: .p1080, fps: 30, streamBase: last + 1, keys: keys) }
    }

    @Test func keyframeRequestsAndReportsReachTheirLayer() throws {
        let keys = OneKey(9)
        let sender = try ScreenSender(top: .p1080, fps: 30, streamBase: 8, keys: keys)
        let source = try textLikePicture(width: 1280, height: 720)
        _ = try sender.datagrams(for: source)
        _ = try sender.datagrams(for: source)
        sender.feedback(try KeyframeRequest(streamID: 10, layer: 2).serialized(), now: .seconds(1))
        let keyed = try sender.datagrams(for: source).map { try MediaRoutingHeader(parsing: $0) }
        let topKeyed = keyed.filter { $0.layer == 2 }.allSatisfy { $0.isKeyframe }
        let lowKeyed = keyed.contains { $0.layer == 0 && $0.isKeyframe }
        #expect(topKeyed && !lowKeyed)
        sender.feedback(try KeyframeRequest(streamID: 99).serialized(), now: .seconds(1))
        sender.feedback(ReceiverReport(streamID: 10, fractionLost: 128, highestSequence: 1, cumulativeLost: 9, jitterMicroseconds: 0).serialized(),
                        now: .seconds(2))
        #expect(sender.encoder.layers.map(\.bitrate) == [500_000, 1_875_000])
        // A sharer receives no media or NACKs, and garbage is counted.
        sender.feedback([0xFF, 1, 2], now: .seconds(2))
        sender.feedback([], now: .seconds(2))
        sender.feedback(try NackPacket(streamID: 10, missing: [1]).serialized(), now: .seconds(2))
        let s = sender.statistics
        #expect(s.captures == 3 && s.keyframeRequests == 1 && s.foreignRequests == 1 && s.receiverReports == 1)
        #expect(s.bitrateChanges == 1 && s.malformed == 3)
    }

    @Test func aWatcherWithoutTheKeyAsksForAKeyframeOnceItHasIt() throws {
        let keys = OneKey(77)
        let sender = try ScreenSender(top: .p360, fps: 30, streamBase: 0, keys: keys)
        let watching = OneKey(77)
        watching.known = false
        let watcher = ScreenWatcher(keys: watching)
        let source = try textLikePicture(width: 640, height: 360)
        var requests = 0
        var pictures = 0
        var firstPicture: Int?
        for index in 0 ..< 40 {
            if pictures > 0, firstPicture == nil { firstPicture = index - 1 }
            let now = Duration.milliseconds(33 * index)
            if index == 10 { watching.known = true }   // the key announcement arrives
            for datagram in try sender.datagrams(for: source) {
                let (shown, replies) = try watcher.receive(datagram, now: now)
                pictures += shown.count
                for reply in replies where (try? KeyframeRequest(parsing: reply)) != nil {
                    requests += 1
                    sender.feedback(reply, now: now)
                }
            }
            let (shown, replies) = try watcher.poll(now: now)
            pictures += shown.count
            for reply in replies where (try? KeyframeRequest(parsing: reply)) != nil {
                requests += 1
                sender.feedback(reply, now: now)
            }
        }
        #expect(watcher.statistics.undecryptable >= 1)
        #expect(requests >= 1)
        // The keyframe that came before the key is shown as soon as the key is there; then the
        // pictures from the first keyframe after it on.
        #expect(firstPicture == 10)
        #expect(pictures >= 25, "\(watcher.statistics)")
    }

    @Test func aLostPacketIsNackedAndTheRepairShowsThePicture() throws {
        let keys = OneKey(5)
        let sender = try ScreenSender(top: .p360, fps: 30, streamBase: 16, keys: keys)
        let watcher = ScreenWatcher(keys: keys)
        var pictures = 0
        var held: [UInt8]?
        var nacked: [UInt32] = []
        for index in 0 ..< 6 {
            let now = Duration.milliseconds(33 * index)
            let datagrams = try sender.datagrams(for: try textLikePicture(width: 640, height: 360, offset: index * 3))
            for (slot, datagram) in datagrams.enumerated() {
                if index == 2, slot == 0 { held = datagram; continue }   // lost on the way
                pictures += try watcher.receive(datagram, now: now).pictures.count
            }
            let (shown, replies) = try watcher.poll(now: now + .milliseconds(20))
            pictures += shown.count
            for reply in replies { if let nack = try? NackPacket(parsing: reply) { nacked += nack.missing } }
        }
        #expect(pictures == 2)   // frames 0 and 1; the rest wait for the missing packet
        let lost = try MediaPacket(parsing: try #require(held))
        #expect(nacked.contains(lost.sequence))
        // The retransmission (as the relay's cache sends it) completes the frame and releases the held ones.
        pictures += try watcher.receive(try #require(held), now: .milliseconds(300)).pictures.count
        #expect(pictures == 6)
        #expect(watcher.statistics.receiver.recoveredByNack == 1)
    }

    @Test func malformedAndTruncatedDatagramsAreCountedAndDropped() throws {
        let keys = OneKey(3)
        let sender = try ScreenSender(top: .p360, fps: 30, streamBase: 0, keys: keys)
        let watcher = ScreenWatcher(keys: keys)
        let good = try sender.datagrams(for: try textLikePicture(width: 640, height: 360))
        var random = SplitMix64(seed: 11)
        for datagram in good.prefix(3) {
            _ = try watcher.receive(Array(datagram.prefix(Int(random.next() % UInt64(MediaPacket.headerBytes)))), now: .zero)
        }
        _ = try watcher.receive([], now: .zero)
        _ = try watcher.receive(try KeyframeRequest(streamID: 0).serialized(), now: .zero)   // feedback is not for watchers
        #expect(watcher.statistics.malformed == 5)
        // A forged frame (payload bytes flipped, header intact) does not authenticate.
        var forged = try MediaPacket(parsing: try #require(good.last))
        forged.payload[forged.payload.count - 1] ^= 0xFF
        for datagram in good.dropLast() { _ = try watcher.receive(datagram, now: .zero) }
        let (pictures, _) = try watcher.receive(forged.serialized(), now: .zero)
        #expect(pictures.isEmpty && watcher.statistics.undecryptable == 1 && watcher.statistics.pictures == 0)
    }
}

@Suite("Datagram queue")
struct DatagramQueueTests {
    @Test func holdsUpToItsCapacityThenCountsDrops() {
        let queue = DatagramQueue()
        for index in 0 ..< DatagramQueue.capacity { queue.push([UInt8(truncatingIfNeeded: index)]) }
        #expect(queue.dropped == 0)
        queue.push([0xFF])
        #expect(queue.dropped == 1)
        let taken = queue.take()
        #expect(taken.count == DatagramQueue.capacity && taken.first == [0] && taken.last == [UInt8(truncatingIfNeeded: DatagramQueue.capacity - 1)])
        #expect(queue.take(waiting: .milliseconds(1)).isEmpty)
        queue.push([1])
        #expect(queue.take(waiting: .seconds(5)) == [[1]])
    }
}
