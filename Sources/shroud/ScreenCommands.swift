import ArgumentParser
import Foundation
import ShroudCrypto
import ShroudMedia
import ShroudNet
import ShroudStore
import ShroudWire

struct ScreenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "screen", abstract: "Share an X11 screen to a channel, or watch one, end-to-end encrypted.",
        subcommands: [Share.self, Watch.self])

    /// The longest `--duration` (a day); without it a share or watch runs until Ctrl-C.
    static let maximumDurationSeconds = 86_400.0
    /// How often statistics are printed (a line on a terminal, a `--json` line).
    static let statisticsInterval = Duration.seconds(1)

    static func checkDuration(_ duration: Double?) throws {
        if let duration, !(duration > 0 && duration <= maximumDurationSeconds) {
            throw ValidationError("--duration must be more than 0 and at most \(Int(maximumDurationSeconds)) seconds")
        }
    }

    struct Share: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Share an X11 screen or window to CH: VP8 simulcast (the chosen quality and 360p), SFrame-encrypted.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Option(help: "X11 display, e.g. :0 (default: $DISPLAY).") var display: String?
        @Option(help: ArgumentHelp("Share one window by its X id (decimal or 0x hex) instead of the whole screen.", valueName: "ID"))
        var window: String?
        @Option(help: "Top quality: 360p, 720p or 1080p (a 360p layer is always sent too).") var quality: VideoQuality = .p1080
        @Option(help: "Frames per second (1-120).") var fps: Int = 30
        @Option(help: "Stop after this many seconds.") var duration: Double?
        @Flag(help: "Carry media inside the WebSocket session instead of UDP.") var mediaOverWebsocket = false
        @Option(help: ArgumentHelp("Send UDP media to this port on the relay's host instead of the announced one.", visibility: .hidden))
        var mediaPort: UInt16?

        func validate() throws {
            guard FramePacer.frameRates.contains(fps) else { throw ValidationError("--fps must be between 1 and 120") }
            try ScreenCommand.checkDuration(duration)
            if let window { guard parseWindowID(window) != nil else { throw ValidationError("--window must be a window id like 0x1e00007") } }
        }

        func run() throws { try ScreenShareSession(options: self).run() }
    }

    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Watch the screen shared in CH: in a window, recorded to a file, or statistics only.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The channel's local name or id.") var channel: String
        @Flag(help: "Show it in an X11 window (on --display or $DISPLAY).") var window = false
        @Option(help: ArgumentHelp("Record it: .ivf (the VP8 frames as received) or .y4m (decoded pictures).", valueName: "FILE"))
        var record: String?
        @Option(help: "Highest quality wanted: 360p, 720p or 1080p (the relay may send less when the link loses packets).")
        var quality: VideoQuality = .p1080
        @Option(help: "X11 display for --window (default: $DISPLAY).") var display: String?
        @Option(help: "The sharer's frames per second (1-120), for the frame delay and jitter figures.") var fps: Int = 30
        @Option(help: "Stop after this many seconds.") var duration: Double?
        @Flag(help: "Carry media inside the WebSocket session instead of UDP.") var mediaOverWebsocket = false
        @Option(help: ArgumentHelp("Send UDP media to this port on the relay's host instead of the announced one.", visibility: .hidden))
        var mediaPort: UInt16?
        @Flag(help: ArgumentHelp("Read a ScreenMarker from every picture and print it (glass-to-glass benchmark).", visibility: .hidden))
        var readMarker = false

        func validate() throws {
            try ScreenCommand.checkDuration(duration)
            guard FramePacer.frameRates.contains(fps) else { throw ValidationError("--fps must be between 1 and 120") }
            if let record {
                guard record.hasSuffix(".ivf") || record.hasSuffix(".y4m") else { throw ValidationError("--record must end in .ivf or .y4m") }
            }
            if window && record != nil { throw ValidationError("use either --window or --record") }
        }

        func run() throws { try ScreenWatchSession(options: self).run() }
    }
}

/// The relay session side both runs share: profile, client, channel, membership and removal.
private struct ScreenContext {
    let profile: UnlockedProfile
    let client: MessagingClient
    let channels: ChannelMessaging
    let local: LocalChannel
    let me: [UInt8]

    init(global: GlobalOptions, channel: String, random: inout SystemRandom) throws {
        profile = try UnlockedProfile(home: global.resolvedHome, random: &random)
        client = try MessagingClient(profile: profile, address: try global.relayAddress(profile.store), random: &random)
        channels = ChannelMessaging(client: client)
        local = try ChannelCommand.find(channel, in: channels)
        me = client.identity.publicIdentity.signingKey
    }

    func close() {
        client.close()
        profile.lock()
    }

    func name(of sender: [UInt8]) -> String {
        let id = try? IdentityID(signingKey: sender)
        let contacts = ContactBook(profile: profile.store)
        return id.flatMap { try? contacts.contact(for: $0)?.name } ?? id?.text ?? Hex.encode(sender)
    }
}

/// What the share's capture thread publishes for the statistics lines.
private struct ShareFigures: Sendable {
    var frames = 0
    var skipped = 0
    var layers: [SimulcastEncoder.Layer] = []
    var sender = ScreenSender.Statistics()
    var method = ""
}

/// One `screen share` run: capture and send on a thread of its own; on this one, the relay
/// session (key requests, membership changes → key rotation, removal).
private final class ScreenShareSession {
    let options: ScreenCommand.Share
    let out: Output
    private let ring = MediaKeyRing()
    private let start = ContinuousClock.now
    private var now: Duration { ContinuousClock.now - start }

    init(options: ScreenCommand.Share) {
        self.options = options
        out = options.global.output
    }

    func run() throws {
        var random = SystemRandom()
        // The screen first: a wrong display or window fails before the channel hears of us.
        let x = try X11Display(name: options.display)
        let source: CaptureSource = options.window.flatMap(parseWindowID).map { .window($0) } ?? .rootWindow
        let capture = try PacedScreenCapture(capturer: ScreenCapturer(display: x, source: source), framesPerSecond: options.fps)

        let context = try ScreenContext(global: options.global, channel: options.channel, random: &random)
        defer { context.close() }
        let local = context.local

        let inbox = DatagramQueue()  // feedback, applied by the capture thread before each frame
        let room = try RoomLink(client: context.client, channel: local, purpose: .screenShare, maxLayer: MediaPacket.maxLayer,
                                  overWebSocket: options.mediaOverWebsocket, mediaPort: options.mediaPort, out: out) { inbox.push($0) }
        // Left on every way out: a failure to publish the key or to start the encoder must not
        // leave us in the room as a sharer nobody can replace.
        var leavePolitely = true
        defer { room.leave(politely: leavePolitely) }
        // Our key before the first frame, so watchers already waiting can open it.
        try publishKey(context, random: &random)
        let sender = try ScreenSender(top: options.quality, fps: options.fps, streamBase: room.streamBase, keys: ring)
        out.emit(nil, ["event": "sharing", "channel": Hex.encode(local.id.bytes), "stream": Int(room.streamBase),
                       "transport": room.transportName, "quality": options.quality.rawValue, "fps": options.fps])
        fflush(nil)
        out.note("Sharing \(options.window.map { "window \($0)" } ?? "the screen of \(x.name)") to \(local.name) at \(options.quality.rawValue) (\(room.transportName)); stop with Ctrl-C.")

        let stopRequested = LockedBox(false)
        let signals = StopSignals { stopRequested.value = true }
        defer { signals.cancel() }
        let finished = DispatchSemaphore(value: 0)
        let failure = LockedBox<String?>(nil)
        let figures = LockedBox(ShareFigures())
        let length = options.duration.map { Duration.milliseconds(Int64($0 * 1000)) } ?? .seconds(ScreenCommand.maximumDurationSeconds)
        let job = ShareJob(capture: capture, sender: sender, room: room)
        let clockStart = start
        Thread {
            defer { finished.signal() }
            do {
                let began = ContinuousClock.now
                var frames = 0
                while !stopRequested.value, ContinuousClock.now - began < length {
                    for datagram in inbox.take() { job.sender.feedback(datagram, now: ContinuousClock.now - clockStart) }
                    try job.capture.withNextFrame { frame, _ in
                        for datagram in try job.sender.datagrams(for: frame) { job.room.send(datagram) }
                    }
                    frames += 1
                    figures.value = ShareFigures(frames: frames, skipped: job.capture.pacer.framesSkipped, layers: job.sender.encoder.layers,
                                                 sender: job.sender.statistics, method: job.capture.capturer.method.rawValue)
                }
            } catch {
                failure.value = oneLine(error)
            }
        }.start()

        // This thread: the relay session.
        var rotate = false
        var removed: String?
        var answers = KeyAnswerLimiter()
        var answerWanted = false
        context.client.onMembershipChange = { [ring] channel, member, change in
            guard channel == local.id else { return }
            if member.bytes == context.me {
                if change == .left || change == .kicked { removed = "you were removed from channel \"\(local.name)\"" }
                return
            }
            if change == .left || change == .kicked {
                // A new key under the rotated sender key: the member who left cannot read it.
                rotate = true
                ring.retire(sender: member.bytes, now: self.now)
            }
        }
        context.client.onOtherPush = { frame in
            if case let .roomLeft(channel) = frame.message, channel == local.id {
                removed = "you were removed from the screen share of \"\(local.name)\""
            }
        }
        let takeRequests = { [out] in
            try context.channels.decryptWaiting()
            try context.channels.consumeControl(local, kinds: ChannelPayload.Kind.screenRange) { received in
                guard received.sender != context.me else { return }
                do {
                    if case .request = try ScreenKeyMessage(received.payload) { answerWanted = true }
                } catch {
                    out.note("shroud: ignored a malformed screen key payload: \(oneLine(error))")
                }
            }
        }
        let onTerminal = isatty(STDERR_FILENO) == 1 && !out.json
        var nextStatistics = ContinuousClock.now + ScreenCommand.statisticsInterval
        var sessionFailure: String?
        var previous = ShareFigures()
        var threadEnded = false
        while true {
            if finished.wait(timeout: .now()) == .success { threadEnded = true; break }
            do {
                try context.client.receive(until: Date().addingTimeInterval(0.1), random: &random, show: { _ in }, keepingText: true,
                                           afterEach: takeRequests)
                try takeRequests()
                if let removed { sessionFailure = removed; break }
                ring.expire(now: now)
                if rotate {
                    rotate = false
                    answerWanted = false
                    try publishKey(context, random: &random)
                } else if answerWanted, answers.shouldAnswer(now: now), let current = ring.currentSendKey() {
                    answerWanted = false
                    let again = try MediaKeyAnnouncement(keyID: current.keyID, baseKey: current.baseKey.bytes, joining: false)
                    _ = try context.channels.send(try ScreenKeyMessage.announcement(again).payload(sentAt: nowMilliseconds()),
                                                  to: local, random: &random)
                }
            } catch {
                sessionFailure = oneLine(error)
                break
            }
            if ContinuousClock.now >= nextStatistics {
                nextStatistics = ContinuousClock.now + ScreenCommand.statisticsInterval
                let current = figures.value
                report(current, since: previous, onTerminal: onTerminal, final: false)
                previous = current
            }
        }
        stopRequested.value = true
        if !threadEnded { finished.wait() }
        if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        report(figures.value, since: ShareFigures(), onTerminal: false, final: true)
        leavePolitely = sessionFailure == nil
        room.leave(politely: leavePolitely)
        if let reason = sessionFailure ?? failure.value { throw Failure(reason) }
        out.emit(nil, ["event": "left", "channel": Hex.encode(local.id.bytes)])
    }

    private func publishKey(_ context: ScreenContext, random: inout SystemRandom) throws {
        let announcement = MediaKeyAnnouncement.random(joining: false, random: &random)
        _ = try context.channels.send(try ScreenKeyMessage.announcement(announcement).payload(sentAt: nowMilliseconds()),
                                      to: context.local, random: &random)
        ring.useOwnKey(announcement)
        out.emit(nil, ["event": "screen_key", "key_id": String(announcement.keyID)])
        fflush(nil)
    }

    /// Per layer: frames and bitrate (bytes since the last line, or over the whole run when final).
    private func report(_ figures: ShareFigures, since previous: ShareFigures, onTerminal: Bool, final: Bool) {
        let seconds = final ? max(0.001, Double((ContinuousClock.now - start) / .milliseconds(1)) / 1000) : 1.0
        var layers: [[String: Any]] = []
        var parts: [String] = []
        for layer in figures.layers {
            let before = previous.layers.first { $0.layer == layer.layer }
            let frames = layer.frames - (before?.frames ?? 0)
            let bits = Double(layer.bytes - (before?.bytes ?? 0)) * 8 / seconds
            layers.append(["layer": Int(layer.layer), "quality": layer.quality.rawValue, "width": layer.size.width,
                           "height": layer.size.height, "fps": Double(frames) / seconds, "bitrate": Int(bits),
                           "target_bitrate": layer.bitrate, "keyframes": layer.keyframes])
            parts.append(String(format: "%@ %.0f fps %.0f kbit/s", layer.quality.rawValue, Double(frames) / seconds, bits / 1000))
        }
        let s = figures.sender
        if out.json {
            out.emit(nil, ["event": "statistics", "final": final, "frames": figures.frames, "skipped": figures.skipped,
                           "layers": layers, "keyframe_requests": s.keyframeRequests, "receiver_reports": s.receiverReports,
                           "bitrate_changes": s.bitrateChanges, "malformed": s.malformed, "capture": figures.method])
            fflush(nil)
            return
        }
        let line = parts.joined(separator: "  ") + "  keyframe requests \(s.keyframeRequests)  reports \(s.receiverReports)"
        if onTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        } else if final {
            FileHandle.standardError.write(Data(("Shared \(figures.frames) frames: " + line + "\n").utf8))
        }
    }
}

/// The capture thread's objects (used by that thread only once it starts).
private final class ShareJob: @unchecked Sendable {
    let capture: PacedScreenCapture<MonotonicPacingClock>
    let sender: ScreenSender
    let room: RoomLink
    init(capture: PacedScreenCapture<MonotonicPacingClock>, sender: ScreenSender, room: RoomLink) {
        self.capture = capture; self.sender = sender; self.room = room
    }
}

/// Where a watcher's pictures go.
private final class PictureSink {
    enum Kind { case window(VideoWindow), y4m(String), ivf(String), none }
    let kind: Kind
    private var y4m: Y4MWriter?
    private var ivf: IVFWriter?
    private var size: PixelSize?
    private var firstFrame: UInt32?
    private var lastPTS: Int64 = -1
    private(set) var written = 0
    let fps: Int

    init(_ kind: Kind, fps: Int) { self.kind = kind; self.fps = fps }

    /// A Y4M recording keeps the first picture's size (later layers are scaled to it); an IVF one
    /// holds the VP8 frames as received (a layer switch starts with a keyframe of the new size).
    func take(_ picture: ScreenWatcher.Picture, title: String) throws {
        switch kind {
        case let .window(window):
            window.setTitle(title)
            try window.draw(picture.frame)
        case let .y4m(path):
            let size = self.size ?? PixelSize(width: picture.frame.width, height: picture.frame.height)
            if y4m == nil {
                y4m = try Y4MWriter(path: path, width: size.width, height: size.height, fps: fps)
                self.size = size
            }
            let frame = picture.frame.width == size.width && picture.frame.height == size.height
                ? picture.frame : try ColorConversion.scale(picture.frame, width: size.width, height: size.height, filter: .bilinear)
            try y4m?.write(frame)
        case let .ivf(path):
            if ivf == nil {
                ivf = try IVFWriter(path: path, width: picture.frame.width, height: picture.frame.height, fps: fps)
                firstFrame = picture.frameNumber
            }
            let pts = max(Int64(picture.frameNumber &- (firstFrame ?? 0)), lastPTS + 1)
            lastPTS = pts
            try ivf?.write(EncodedVideoFrame(data: picture.encoded, isKeyframe: picture.isKeyframe, pts: pts))
        case .none:
            break
        }
        written += 1
    }

    func finish() throws {
        try y4m?.finish()
        try ivf?.finish()
        if case let .window(window) = kind { window.close() }
    }
}

/// What the media thread publishes for the statistics lines.
private struct WatchFigures: Sendable {
    var snapshot: WatchStatistics.Snapshot?
    var statistics = ScreenWatcher.Statistics()
    var written = 0
}

/// One `screen watch` run: the media thread receives, repairs, decrypts, decodes and shows or
/// records; this thread runs the relay session (the sharer's key, removal).
private final class ScreenWatchSession {
    let options: ScreenCommand.Watch
    let out: Output
    private let ring = MediaKeyRing()
    private let start = ContinuousClock.now
    private var now: Duration { ContinuousClock.now - start }

    init(options: ScreenCommand.Watch) {
        self.options = options
        out = options.global.output
    }

    func run() throws {
        var random = SystemRandom()
        // The window's display first: a wrong one fails before the channel hears of us.
        var display: X11Display?
        if options.window { display = try X11Display(name: options.display) }
        let context = try ScreenContext(global: options.global, channel: options.channel, random: &random)
        defer { context.close() }
        let local = context.local

        // Ask the sharer for its key first (it may have announced it before we came), so that the
        // answer travels while the room is joined and the relay asks the sharer for a keyframe.
        _ = try context.channels.send(try ScreenKeyMessage.request.payload(sentAt: nowMilliseconds()), to: local, random: &random)
        let queue = DatagramQueue()
        let room = try RoomLink(client: context.client, channel: local, purpose: .screenWatch, maxLayer: options.quality.layer,
                                  overWebSocket: options.mediaOverWebsocket, mediaPort: options.mediaPort, out: out) { queue.push($0) }
        // Left on every way out, including a window that cannot be opened.
        var leavePolitely = true
        defer { room.leave(politely: leavePolitely) }
        let joinedAt = ContinuousClock.now
        out.emit(nil, ["event": "watching", "channel": Hex.encode(local.id.bytes), "transport": room.transportName,
                       "quality": options.quality.rawValue])
        fflush(nil)
        out.note("Watching the screen shared in \(local.name) (\(room.transportName)); stop with Ctrl-C.")

        let sinkKind: PictureSink.Kind
        if let display {
            // The window opens at the quality's size; it follows the picture's aspect when drawing.
            let height = options.quality.height
            sinkKind = .window(try VideoWindow(display: display, title: "Shroud: \(local.name) (waiting)", width: height * 16 / 9, height: height))
        } else if let record = options.record {
            sinkKind = record.hasSuffix(".ivf") ? .ivf(record) : .y4m(record)
        } else {
            sinkKind = .none
        }
        let sink = PictureSink(sinkKind, fps: options.fps)
        if case let .window(window) = sinkKind {
            out.emit("Viewer in window 0x\(String(window.windowID, radix: 16))", ["event": "window", "window": "0x" + String(window.windowID, radix: 16)])
            fflush(nil)
        }

        let stopRequested = LockedBox(false)
        let signals = StopSignals { stopRequested.value = true }
        defer { signals.cancel() }
        // Display names of key announcers, by member id (filled by the session thread). The window
        // is titled from the key that opened the picture, so a member who merely announces a key
        // cannot put its name on someone else's screen.
        let announcerNames = LockedBox([[UInt8]: String]())
        let finished = DispatchSemaphore(value: 0)
        let failure = LockedBox<String?>(nil)
        let figures = LockedBox(WatchFigures())
        let length = options.duration.map { Duration.milliseconds(Int64($0 * 1000)) } ?? .seconds(ScreenCommand.maximumDurationSeconds)
        let job = WatchJob(watcher: ScreenWatcher(keys: ring, framesPerSecond: options.fps), sink: sink, room: room)
        let clockStart = start
        let readMarker = options.readMarker
        let output = out
        let keyRing = ring
        Thread {
            defer { finished.signal() }
            // The recording is closed (its header completed, the window closed) however the
            // thread ends; a failure to finish matters only when nothing else failed first.
            var sinkFinished = false
            defer { if !sinkFinished { try? job.sink.finish() } }
            do {
                var first = true
                while !stopRequested.value, ContinuousClock.now - joinedAt < length {
                    let datagrams = queue.take(waiting: .milliseconds(5))
                    var pictures: [ScreenWatcher.Picture] = []
                    for datagram in datagrams {
                        let (shown, feedback) = try job.watcher.receive(datagram, now: ContinuousClock.now - clockStart)
                        pictures += shown
                        for reply in feedback { job.room.send(reply) }
                    }
                    let (due, feedback) = try job.watcher.poll(now: ContinuousClock.now - clockStart)
                    pictures += due
                    for reply in feedback { job.room.send(reply) }
                    for picture in pictures {
                        let quality = VideoQuality(layer: picture.layer)?.rawValue ?? "layer \(picture.layer)"
                        if first {
                            first = false
                            output.emit(nil, ["event": "first_picture", "after_join_ms": milliseconds(ContinuousClock.now - joinedAt),
                                              "width": picture.frame.width, "height": picture.frame.height, "layer": Int(picture.layer)])
                            fflush(nil)
                        }
                        if readMarker, let value = ScreenMarker.read(picture.frame) {
                            output.emit(nil, ["event": "marker", "value": Int(value), "at_ms": Date().timeIntervalSince1970 * 1000])
                        }
                        let sharerName = keyRing.sender(ofKey: picture.keyID).flatMap { announcerNames.value[$0] } ?? "the sharer"
                        try job.sink.take(picture, title: "Shroud: \(sharerName) in \(local.name), \(quality) \(picture.frame.width)x\(picture.frame.height)")
                    }
                    if case let .window(window) = job.sink.kind, try !window.processEvents() { break }
                    let now = ContinuousClock.now - clockStart
                    figures.value = WatchFigures(snapshot: job.watcher.snapshot(now: now), statistics: job.watcher.statistics,
                                                 written: job.sink.written)
                }
                sinkFinished = true
                try job.sink.finish()
            } catch {
                failure.value = oneLine(error)
            }
        }.start()

        // This thread: the relay session.
        var removed: String?
        context.client.onMembershipChange = { [ring] channel, member, change in
            guard channel == local.id else { return }
            if member.bytes == context.me {
                if change == .left || change == .kicked { removed = "you were removed from channel \"\(local.name)\"" }
                return
            }
            if change == .left || change == .kicked { ring.retire(sender: member.bytes, now: self.now) }
        }
        context.client.onOtherPush = { frame in
            if case let .roomLeft(channel) = frame.message, channel == local.id {
                removed = "you were removed from the screen share of \"\(local.name)\""
            }
        }
        let takeKeys = { [ring, out] in
            try context.channels.decryptWaiting()
            try context.channels.consumeControl(local, kinds: ChannelPayload.Kind.screenRange) { received in
                guard received.sender != context.me else { return }
                do {
                    guard case let .announcement(announcement) = try ScreenKeyMessage(received.payload) else { return }
                    let outcome = ring.install(announcement, from: received.sender, now: self.now)
                    let name = context.name(of: received.sender)
                    if announcerNames.value[received.sender] == nil { announcerNames.value[received.sender] = name }
                    out.emit(nil, ["event": "screen_key", "from": name, "key_id": String(announcement.keyID), "outcome": "\(outcome)"])
                    fflush(nil)
                } catch {
                    out.note("shroud: ignored a malformed screen key payload: \(oneLine(error))")
                }
            }
        }
        let onTerminal = isatty(STDERR_FILENO) == 1 && !out.json
        var nextStatistics = ContinuousClock.now + ScreenCommand.statisticsInterval
        var sessionFailure: String?
        var threadEnded = false
        while true {
            if finished.wait(timeout: .now()) == .success { threadEnded = true; break }
            do {
                try context.client.receive(until: Date().addingTimeInterval(0.1), random: &random, show: { _ in }, keepingText: true,
                                           afterEach: takeKeys)
                try takeKeys()
                if let removed { sessionFailure = removed; break }
                ring.expire(now: now)
            } catch {
                sessionFailure = oneLine(error)
                break
            }
            if ContinuousClock.now >= nextStatistics {
                nextStatistics = ContinuousClock.now + ScreenCommand.statisticsInterval
                report(figures.value, dropped: queue.dropped, onTerminal: onTerminal, final: false)
            }
        }
        stopRequested.value = true
        if !threadEnded { finished.wait() }
        if onTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
        report(figures.value, dropped: queue.dropped, onTerminal: false, final: true)
        leavePolitely = sessionFailure == nil
        room.leave(politely: leavePolitely)
        if let reason = sessionFailure ?? failure.value { throw Failure(reason) }
        out.emit(nil, ["event": "left", "channel": Hex.encode(local.id.bytes), "pictures": figures.value.written])
    }

    private func report(_ figures: WatchFigures, dropped: Int, onTerminal: Bool, final: Bool) {
        let s = figures.statistics
        let snap = figures.snapshot
        let delay = snap.map { milliseconds($0.frameDelay) } ?? 0
        if out.json {
            var fields: [String: Any] = [
                "event": "statistics", "final": final, "fps": snap?.framesPerSecond ?? 0, "bitrate": snap?.bitsPerSecond ?? 0,
                "width": snap?.width ?? 0, "height": snap?.height ?? 0, "loss_percent": ((snap?.lossPercent ?? 0) * 10).rounded() / 10,
                "frame_delay_ms": (delay * 10).rounded() / 10, "pictures": s.pictures, "packets": s.receiver.packets,
                "nacks": s.receiver.nacksSent, "recovered": s.receiver.recoveredByNack, "keyframe_requests": s.receiver.keyframeRequests,
                "layer_changes": s.receiver.streamChanges, "skipped": s.receiver.framesSkipped, "malformed": s.malformed,
                "undecryptable": s.undecryptable, "decode_errors": s.decodeErrors, "queue_dropped": dropped,
            ]
            if let layer = snap?.layer { fields["layer"] = Int(layer) }
            out.emit(nil, fields)
            fflush(nil)
            return
        }
        let layer = snap?.layer.flatMap { VideoQuality(layer: $0)?.rawValue } ?? "-"
        let line = String(format: "%@ %dx%d  %d fps  %.0f kbit/s  loss %.1f%%  delay %.0f ms  nacks %d  keyframe requests %d",
                          layer, snap?.width ?? 0, snap?.height ?? 0, snap?.framesPerSecond ?? 0, Double(snap?.bitsPerSecond ?? 0) / 1000,
                          snap?.lossPercent ?? 0, delay, s.receiver.nacksSent, s.receiver.keyframeRequests)
        if onTerminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        } else if final {
            FileHandle.standardError.write(Data(("Watched \(s.pictures) pictures: " + line + "\n").utf8))
        }
    }
}

/// The media thread's objects (used by that thread only once it starts).
private final class WatchJob: @unchecked Sendable {
    let watcher: ScreenWatcher
    let sink: PictureSink
    let room: RoomLink
    init(watcher: ScreenWatcher, sink: PictureSink, room: RoomLink) {
        self.watcher = watcher; self.sink = sink; self.room = room
    }
}
