import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudMedia
import ShroudNet
import ShroudStore
import ShroudWire

struct VoiceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "voice", abstract: "Group voice in a channel, end-to-end encrypted (the relay forwards frames it cannot read).",
        subcommands: [Join.self])

    /// The longest `--duration` (a day); without it the call runs until Ctrl-C (or until an input
    /// file ends).
    static let maximumDurationSeconds = 86_400.0
    /// How long the relay may take to answer the UDP bind before media moves to the WebSocket.
    static let udpBindTimeout = Duration.seconds(2)
    /// How often statistics are printed (a line on a terminal, a `--json` line).
    static let statisticsInterval = Duration.seconds(1)

    struct Join: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Join CH's voice call: capture, encrypt and send; receive, decrypt, mix and play (stop with Ctrl-C).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Option(help: "Microphone: an ALSA capture device, a 48 kHz mono WAV file (played in real time), or 'none' to only listen.")
        var input: String = "default"
        @Option(help: "Speaker: an ALSA playback device, a WAV file to record the call to, or 'none'.")
        var output: String = "default"
        @Option(help: "Leave after this many seconds.") var duration: Double?
        @Flag(help: "Carry media inside the WebSocket session instead of UDP.") var mediaOverWebsocket = false
        @Option(help: ArgumentHelp("Send UDP media to this port on the relay's host instead of the announced one (e.g. through a test proxy).",
                                   visibility: .hidden))
        var mediaPort: UInt16?

        func validate() throws {
            if let duration, !(duration > 0 && duration <= VoiceCommand.maximumDurationSeconds) {
                throw ValidationError("--duration must be more than 0 and at most \(Int(VoiceCommand.maximumDurationSeconds)) seconds")
            }
        }

        func run() throws {
            try VoiceSession(options: self).run()
        }
    }

    static func isWAVPath(_ text: String) -> Bool { text.lowercased().hasSuffix(".wav") }
}

/// Thread-safe slot for the call, filled once the transports exist (they need each other).
private final class CallSlot: @unchecked Sendable {
    private let lock = NSLock()
    private var call: VoiceCall?
    func set(_ call: VoiceCall) { lock.lock(); self.call = call; lock.unlock() }
    func receive(_ datagram: [UInt8]) {
        lock.lock(); let call = self.call; lock.unlock()
        call?.receive(datagram)
    }
}

/// One `voice join` run: joins the room, publishes this member's media key on the channel, runs
/// the call on its own thread and, on this one, the relay session (media keys from the others,
/// membership notices, rotation), until the duration ends, the input file ends, or a signal.
private final class VoiceSession {
    let options: VoiceCommand.Join
    let out: Output
    private let ring = MediaKeyRing()
    private let clockStart = ContinuousClock.now
    private var callNow: Duration { ContinuousClock.now - clockStart }

    init(options: VoiceCommand.Join) {
        self.options = options
        out = options.global.output
    }

    func run() throws {
        var random = SystemRandom()
        let profile = try UnlockedProfile(home: options.global.resolvedHome, random: &random)
        defer { profile.lock() }
        let client = try MessagingClient(profile: profile, address: try options.global.relayAddress(profile.store), random: &random)
        defer { client.close() }
        let channels = ChannelMessaging(client: client)
        let local = try ChannelCommand.find(options.channel, in: channels)
        let me = client.identity.publicIdentity.signingKey

        // Media source and sink first: a missing device or file fails before anyone hears us join.
        let source: VoiceSource? = try openSource()
        let wavOutput: WAVWriter? = VoiceCommand.isWAVPath(options.output)
            ? try WAVWriter(path: options.output, sampleRate: OpusCodec.sampleRate, channels: 1) : nil
        let sink: VoiceSink?
        if let wavOutput {
            sink = wavOutput
        } else if options.output == "none" {
            sink = nil
        } else {
            sink = try AudioPlayback(device: options.output, format: try AudioFormat(channels: 1, periodMilliseconds: 20))
        }

        // Join the room: the relay refuses a non-member at once.
        let slot = CallSlot()
        let room = try RoomLink(client: client, channel: local, purpose: .voice, maxLayer: MediaLayers.noCap,
                                overWebSocket: options.mediaOverWebsocket, mediaPort: options.mediaPort, out: out,
                                onDatagram: { slot.receive($0) })
        // Error paths below leave the room too (the normal end leaves it politely first).
        defer { room.leave(politely: false) }
        let stream = room.streamBase
        let send: @Sendable ([UInt8]) -> Void = { room.send($0) }
        let sender = source == nil ? nil : try VoiceSender(streamID: stream, keys: ring)
        let call = VoiceCall(sender: sender, mixer: VoiceMixer(keys: ring, ownStream: stream), send: send)
        slot.set(call)
        let transportName = room.transportName
        out.emit(nil, ["event": "joined", "channel": Hex.encode(local.id.bytes), "stream": Int(stream), "transport": transportName])
        fflush(nil)
        out.note("In the voice call of \(local.name) (\(transportName)); stop with Ctrl-C.")

        // Our key, marked `joining` so the members already in the call answer with theirs.
        try publish(MediaKeyAnnouncement.random(joining: true, random: &random), channels, local, random: &random)

        // Signals end the call at its next tick; the room is then left cleanly below.
        let signals = StopSignals { call.stop() }

        // The call on its own thread.
        let finished = DispatchSemaphore(value: 0)
        let callFailure = LockedBox<String?>(nil)
        let length = options.duration.map { Duration.milliseconds(Int64($0 * 1000)) } ?? .seconds(VoiceCommand.maximumDurationSeconds)
        let stopAtEnd = options.duration == nil && VoiceCommand.isWAVPath(options.input)
        // Handed to the call thread only (nothing else touches them while it runs).
        let media = CallMedia(source: source, sink: sink)
        let output = out
        Thread {
            do {
                try call.run(source: media.source, sink: media.sink, duration: length, stopAtEndOfSource: stopAtEnd) { tick in
                    // When the first 20 ms went out (and the recording began), on the wall clock,
                    // so recordings of several processes can be lined up.
                    guard tick == 0 else { return }
                    output.emit(nil, ["event": "started", "at_ms": Date().timeIntervalSince1970 * 1000])
                    fflush(nil)
                }
            } catch {
                callFailure.value = oneLine(error)
            }
            finished.signal()
        }.start()

        // This thread: the relay session.
        var rotate = false, answer = false
        var removed: String?
        client.onMembershipChange = { [ring] channel, member, change in
            guard channel == local.id else { return }
            if member.bytes == me {
                if change == .left || change == .kicked { removed = "you were removed from channel \"\(local.name)\"" }
                return
            }
            switch change {
            case .joined: rotate = true
            case .left, .kicked:
                rotate = true
                ring.retire(sender: member.bytes, now: ContinuousClock.now - self.clockStart)
            case .roleChanged: break
            }
        }
        client.onOtherPush = { frame in
            if case let .roomLeft(channel) = frame.message, channel == local.id { removed = "you were removed from the call of \"\(local.name)\" (you left the channel or were removed from it)" }
        }
        let contacts = ContactBook(profile: profile.store)
        let takeKeys = { [ring, out] in
            try channels.decryptWaiting()
            try channels.consumeControl(local, kinds: ChannelPayload.Kind.voiceRange) { received in
                guard received.sender != me else { return }
                do {
                    guard let announcement = try MediaKeyAnnouncement.from(received.payload) else { return }
                    let outcome = ring.install(announcement, from: received.sender, now: ContinuousClock.now - self.clockStart)
                    if announcement.joining { answer = true }
                    let id = (try? IdentityID(signingKey: received.sender))
                    let name = id.flatMap { try? contacts.contact(for: $0)?.name } ?? id?.text ?? Hex.encode(received.sender)
                    out.emit(nil, ["event": "media_key", "from": name, "key_id": String(announcement.keyID), "outcome": "\(outcome)"])
                    fflush(nil)
                } catch {
                    FileHandle.standardError.write(Data("shroud: ignored a malformed media key: \(oneLine(error))\n".utf8))
                }
            }
        }
        let onTerminal = isatty(STDERR_FILENO) == 1 && !out.json
        var nextStatistics = ContinuousClock.now + VoiceCommand.statisticsInterval
        var sessionFailure: String?
        var callEnded = false
        while true {
            if finished.wait(timeout: .now()) == .success { callEnded = true; break }
            do {
                try client.receive(until: Date().addingTimeInterval(0.1), random: &random, show: { _ in }, keepingText: true, afterEach: takeKeys)
                try takeKeys()
                if let removed { sessionFailure = removed; call.stop(); break }
                ring.expire(now: callNow)
                if rotate {
                    // A membership change: a new key id, sent under the channel's (rotated) sender
                    // key, so a member who left cannot read it.
                    rotate = false; answer = false
                    try publish(MediaKeyAnnouncement.random(joining: false, random: &random), channels, local, random: &random)
                } else if answer, let id = ring.ownKeyID, let current = ring.currentSendKey(), current.keyID == id {
                    answer = false
                    let again = try MediaKeyAnnouncement(keyID: id, baseKey: current.baseKey.bytes, joining: false)
                    try publish(again, channels, local, random: &random)
                }
            } catch {
                sessionFailure = oneLine(error)
                call.stop()
                break
            }
            if ContinuousClock.now >= nextStatistics {
                nextStatistics = ContinuousClock.now + VoiceCommand.statisticsInterval
                report(call, roundTrip: room.roundTrip, onTerminal: onTerminal, final: false)
            }
        }
        if !callEnded { finished.wait() }
        signals.cancel()
        if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        report(call, roundTrip: room.roundTrip, onTerminal: false, final: true)
        room.leave(politely: sessionFailure == nil)
        try wavOutput?.finish()
        if let failure = sessionFailure ?? callFailure.value { throw Failure(failure) }
        out.emit(nil, ["event": "left", "channel": Hex.encode(local.id.bytes)])
    }

    private func openSource() throws -> VoiceSource? {
        if options.input == "none" { return nil }
        if VoiceCommand.isWAVPath(options.input) { return try WAVVoiceSource(path: options.input) }
        return try AudioCapture(device: options.input, format: try AudioFormat(channels: 1, periodMilliseconds: 20))
    }

    /// Sends our key on the channel and, once the relay has it, starts using it.
    private func publish(_ announcement: MediaKeyAnnouncement, _ channels: ChannelMessaging, _ local: LocalChannel,
                         random: inout SystemRandom) throws {
        _ = try channels.send(try announcement.payload(sentAt: nowMilliseconds()), to: local, random: &random)
        ring.useOwnKey(announcement)
        out.emit(nil, ["event": "own_key", "key_id": String(announcement.keyID)])
        fflush(nil)
    }

    private func report(_ call: VoiceCall, roundTrip: Duration?, onTerminal: Bool, final: Bool) {
        let statistics = call.statistics
        if out.json {
            let line = statistics.jsonLine(roundTrip: roundTrip)
            print("{\"event\":\"statistics\",\"final\":\(final),\"frames_sent\":\(call.framesSent)," + line.dropFirst())
            fflush(nil)
        } else if onTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + statistics.summary(roundTrip: roundTrip)).utf8))
        } else if final {
            FileHandle.standardError.write(Data((statistics.summary(roundTrip: roundTrip) + "\n").utf8))
        }
    }
}

private final class CallMedia: @unchecked Sendable {
    let source: VoiceSource?
    let sink: VoiceSink?
    init(source: VoiceSource?, sink: VoiceSink?) { self.source = source; self.sink = sink }
}

final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

/// The relay's address as an IP literal for the UDP socket (a host name is resolved, IPv4 first).
func resolveIPAddress(_ host: String) throws -> String {
    var v4 = in_addr(), v6 = in6_addr()
    if inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1 { return host }
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
    var list: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, nil, &hints, &list) == 0, let first = list else { throw Failure("cannot resolve the relay's host \(host)") }
    defer { freeaddrinfo(list) }
    var candidates: [String] = []
    var entry: UnsafeMutablePointer<addrinfo>? = first
    while let current = entry {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        if current.pointee.ai_family == AF_INET, let address = current.pointee.ai_addr {
            address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { var a = $0.pointee.sin_addr; _ = inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count)) }
            candidates.insert(String(cString: buffer), at: 0)
        } else if current.pointee.ai_family == AF_INET6, let address = current.pointee.ai_addr {
            address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { var a = $0.pointee.sin6_addr; _ = inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count)) }
            candidates.append(String(cString: buffer))
        }
        entry = current.pointee.ai_next
    }
    guard let chosen = candidates.first else { throw Failure("the relay's host \(host) has no IP address") }
    return chosen
}
