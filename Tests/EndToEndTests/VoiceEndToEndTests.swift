import Crypto
import Foundation
import NIOPosix
import ShroudCrypto
import ShroudMedia
import ShroudNet
import ShroudTestSupport
import ShroudWire
import Testing

/// Media keys for the test: shared by the three members as the channel layer would share them.
/// This suite exercises the engine and transports in-process with known keys; the product's key
/// distribution over the channel is tested with the real binaries in `VoiceJoinEndToEndTests`.
final class SharedTestKeys: MediaKeyProvider, @unchecked Sendable {
    let own: (UInt64, SecureBytes)?
    let all: [UInt64: SecureBytes]
    init(own: UInt64?, all: [UInt64: SecureBytes]) { self.own = own.flatMap { id in all[id].map { (id, $0) } }; self.all = all }
    func currentSendKey() -> (keyID: UInt64, baseKey: SecureBytes)? { own.map { ($0.0, $0.1) } }
    func receiveKey(id: UInt64) -> SecureBytes? { all[id] }
}

/// Three members in a voice room of the real relay binary on loopback: Alice speaks the speech
/// fixture in real time over UDP, Bob records over UDP, Carol records over the WebSocket fallback
/// (media inside session frames); with UDP direct and through shroud-impair.
@Suite(.serialized) struct VoiceEndToEndTests {
    final class Box<T>: @unchecked Sendable { var value: T; init(_ value: T) { self.value = value } }

    func request(_ connection: SessionClientConnection, _ id: UInt32, _ message: RelayMessage) throws -> RelayMessage {
        try connection.sendBlocking(SessionFrame(requestID: id, message))
        while true {
            let frame = try connection.nextBlocking(timeout: 10)
            if frame.requestID == id { return frame.message }
        }
    }

    @Test(.timeLimit(.minutes(3)), arguments: [false, true])
    func threeMembersTalkThroughTheRelay(impaired: Bool) throws {
        let dir = TemporaryDirectory()
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: dir.path)
        defer { _ = relay.stop() }
        let line = try relay.waitForLine(containing: "listening")
        let field = { (name: String) in line.split(separator: " ").first(where: { $0.hasPrefix(name + "=") }).flatMap { Int($0.dropFirst(name.count + 1)) } }
        let port = try #require(field("port"))
        var mediaPort = try #require(field("media_port"))
        var proxy: Process?
        defer { if let proxy, proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() } }
        if impaired {
            let started = try startVoiceImpairment(target: mediaPort, seconds: 60)
            proxy = started.process
            mediaPort = started.port
        }

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let members = (0..<3).map { _ in RelayMediaPlaneEndToEndTests.Member() }
        let sessions = try members.map { try $0.login(port: port, group: group) }
        defer { for session in sessions { try? session.channel.close().wait() } }
        let channel = try ChannelID([UInt8](repeating: 0x77, count: 16))
        _ = try request(sessions[0], 2, .createChannel(channel: channel, visibility: .open, metadata: [UInt8](repeating: 1, count: 256)))
        for session in sessions.dropFirst() { _ = try request(session, 2, .joinChannel(channel: channel)) }
        let keys: [UInt64: SecureBytes] = [1: SecureBytes(copying: (0..<32).map { UInt8($0) })]

        var calls: [VoiceCall] = [], transports: [UDPMediaTransport] = []
        var fallback: SessionMediaTransport?
        for (index, session) in sessions.enumerated() {
            let overSession = index == 2
            guard case let .roomJoined(_, token, stream, _, _) = try request(session, 3, .joinRoom(channel: channel, transport: overSession ? .session : .datagram, purpose: .voice, maxLayer: 7)) else {
                Issue.record("join refused"); return
            }
            let ring = SharedTestKeys(own: index == 0 ? 1 : nil, all: keys)
            let sender = index == 0 ? try VoiceSender(streamID: stream, keys: ring) : nil
            if overSession {
                let transport = SessionMediaTransport(connection: session)
                let call = VoiceCall(sender: sender, mixer: VoiceMixer(keys: ring, ownStream: stream), send: { transport.send($0) })
                transport.start(onDatagram: { call.receive($0) })
                fallback = transport
                calls.append(call)
            } else {
                let transport = try UDPMediaTransport(relayHost: "127.0.0.1", relayPort: UInt16(mediaPort), token: token, localHost: "127.0.0.\(10 + index)")
                let call = VoiceCall(sender: sender, mixer: VoiceMixer(keys: ring, ownStream: stream), send: { transport.send($0) })
                transport.start { call.receive($0) }
                #expect(transport.waitUntilBound(timeout: .seconds(5)), "UDP bind answered")
                #expect(transport.roundTrip != nil)
                calls.append(call); transports.append(transport)
            }
        }
        defer { for transport in transports { transport.stop() }; fallback?.stop() }

        let speechPath = Fixtures.path("speech-48k-mono.wav")
        let speech = try Fixtures.speech().samples
        let recordings = Box([RecordingVoiceSink(), RecordingVoiceSink()])
        let done = DispatchSemaphore(value: 0)
        let failure = Box<String?>(nil)
        let seconds = Double(speech.count) / 48_000
        for (index, call) in calls.enumerated() {
            Thread {
                do {
                    if index == 0 {
                        try call.run(source: try WAVVoiceSource(path: speechPath), sink: nil, duration: .seconds(seconds + 0.1))
                    } else {
                        try call.run(source: nil, sink: recordings.value[index - 1], duration: .seconds(seconds + 1))
                    }
                } catch { failure.value = "\(error)" }
                done.signal()
            }.start()
        }
        for _ in calls { done.wait() }
        #expect(failure.value == nil)

        // Thresholds (AudioQuality.speechMatch: envelope and spectrogram correlation, each piece at
        // its own alignment, so 20 ms jitter-buffer steps do not count as errors). Measured: clean
        // envelope 0.97 and spectral 0.93; through 10 % loss and 30 ms jitter each way (19 % end
        // to end) envelope 0.97 and spectral 0.89 (concealed frames blur the spectrogram). The
        // control — the recording against the speech played backwards: the same sounds and
        // long-term spectrum in the wrong order — scored envelope 0.50–0.52 (the per-piece lag
        // search finds partial fits) and spectral 0.27–0.30. Bars between the two: envelope 0.85,
        // spectral 0.85 clean and 0.75 impaired; the control must stay below 0.7 and 0.5.
        for (index, recording) in recordings.value.enumerated() {
            let listener = calls[index + 1]
            let statistics = listener.statistics
            let match = AudioQuality.speechMatch(speech, recording.samples)
            let control = AudioQuality.speechMatch(Array(speech.reversed()), recording.samples)
            #expect(match.envelope > 0.85, "listener \(index): \(match) \(statistics)")
            #expect(match.spectral > (impaired ? 0.75 : 0.85), "listener \(index): \(match) \(statistics)")
            #expect(control.envelope < 0.7 && control.spectral < 0.5, "control \(control)")
            // Mouth to ear: the recording's lag behind the speech, corrected for when each call's
            // first tick happened.
            let offset = Double((try #require(listener.firstTick) - (try #require(calls[0].firstTick))) / .microseconds(1)) / 1000
            let mouthToEar = Double(match.lag) / 48 + offset
            print("voice e2e impaired=\(impaired) listener=\(index == 0 ? "udp" : "websocket") match=\(match) control=\(control) mouth-to-ear=\(String(format: "%.1f", mouthToEar)) ms \(statistics.jsonLine())")
            #expect(mouthToEar > 0 && mouthToEar < (impaired ? 600 : 200), "mouth to ear \(mouthToEar) ms")
            #expect(statistics.undecryptable == 0)
            if impaired {
                #expect(statistics.recoveredByNACK + statistics.recoveredByFEC > 0, "\(statistics)")
            }
        }
    }
}
