import CX11
import Foundation
import ShroudMedia
import ShroudTestSupport
import Testing

/// `shroud screen share` and `shroud screen watch` with the real binaries, a real relay on loopback
/// and a private Xvfb showing a known screen (issue 6, Tests): recordings match the shared screen,
/// a 360p watcher gets 640×360, a late joiner sees a picture within a second, a watcher behind a
/// lossy link is moved to the lower layer and back, the window viewer draws the picture, a
/// stranger is refused, and the sharer ends cleanly at --duration.
@Suite(.serialized) struct ScreenShareEndToEndTests {
    typealias Run = VoiceJoinEndToEndTests.Call
    let shroud = Binaries.path("shroud")
    let passphrase = ["SHROUD_PASSPHRASE": "a passphrase for tests"]

    final class World {
        let dir = TemporaryDirectory("shroud-screen-e2e")
        var relay: BackgroundProcess?
        var port = 0
        var mediaPort = 0
        deinit { _ = relay?.stop(SIGKILL) }
    }

    private func start() throws -> World {
        let world = World()
        let relayDir = world.dir.path + "/relay"
        try FileManager.default.createDirectory(atPath: relayDir, withIntermediateDirectories: true)
        let relay = try BackgroundProcess(Binaries.path("shroud-relay"), ["--host", "127.0.0.1", "--port", "0"], directory: relayDir)
        world.relay = relay
        let line = try relay.waitForLine(containing: "listening")
        let field = { (name: String) in line.split(separator: " ").first(where: { $0.hasPrefix(name + "=") }).flatMap { Int($0.dropFirst(name.count + 1)) } }
        world.port = try #require(field("port"))
        world.mediaPort = try #require(field("media_port"))
        return world
    }

    private func at(_ world: World, _ home: String, _ arguments: [String]) throws -> RunResult {
        try run(shroud, ["--home", home, "--server", "ws://127.0.0.1:\(world.port)", "--json"] + arguments, environment: passphrase, timeout: 60)
    }

    @discardableResult
    private func ok(_ world: World, _ home: String, _ arguments: [String]) throws -> [[String: Any]] {
        let result = try at(world, home, arguments)
        #expect(result.status == 0, "\(arguments): \(result.stderr)")
        return result.jsonLines
    }

    /// Profiles `names` (the first owns the channel, the others join it) and `strangers` (not in it).
    private func people(_ world: World, _ names: [String], strangers: [String] = []) throws -> (homes: [String], channel: String) {
        let homes = (names + strangers).map { world.dir.path + "/" + $0 }
        for home in homes { try ok(world, home, ["id", "new"]) }
        let channel = "screens"
        try ok(world, homes[0], ["channel", "create", channel, "--private"])
        let invite = try #require(try ok(world, homes[0], ["channel", "invite", channel, "--uses", "\(names.count - 1)"]).first?["invite"] as? String)
        for home in homes[1 ..< names.count] { try ok(world, home, ["channel", "join", invite]) }
        return (homes, channel)
    }

    private func screen(_ world: World, _ home: String, _ arguments: [String]) throws -> Run {
        try Run(shroud, ["--home", home, "--server", "ws://127.0.0.1:\(world.port)", "--json", "screen"] + arguments, environment: passphrase)
    }

    /// A fixture screen as BGRA for XPainter and as the I420 reference the recordings are held to.
    private func knownScreen(_ name: String, width: Int, height: Int) throws -> (bgra: [UInt8], picture: I420Frame) {
        let bgra = try Fixtures.run(["-v", "error", "-i", Fixtures.path(name), "-vf", "scale=\(width):\(height)",
                                     "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        return (Array(bgra), try ColorConversion.bgraToI420(Array(bgra), width: width, height: height, stride: width * 4))
    }

    private func statistics(_ run: Run) -> [[String: Any]] {
        run.events("statistics").filter { $0["final"] as? Bool == false }
    }

    @Test(.timeLimit(.minutes(4)))
    func watchersRecordTheSharedScreenAtTheirQualityAndALateJoinerSeesItWithinASecond() throws {
        let server = try XvfbServer(width: 1920, height: 1080)
        defer { server.stop() }
        let known = try knownScreen("screen-code.png", width: 1920, height: 1080)
        let painter = try XPainter(server.displayName)
        painter.put(known.bgra, width: 1920, height: 1080, on: painter.root)

        let world = try start()
        let (homes, channel) = try people(world, ["alice", "bob", "carol"], strangers: ["erin"])
        let (alice, bob, carol, erin) = (homes[0], homes[1], homes[2], homes[3])

        // A stranger to the channel is refused at once, in one line.
        let refused = try at(world, erin, ["screen", "watch", channel, "--duration", "3"])
        #expect(refused.status == 1 && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")

        let sharer = try screen(world, alice, ["share", channel, "--display", server.displayName, "--quality", "1080p", "--duration", "9"])
        _ = try sharer.waitFor("sharing")
        // One sharer per channel: a second is refused by the relay, in one line.
        let second = try at(world, carol, ["screen", "share", channel, "--display", server.displayName, "--duration", "2"])
        #expect(second.status == 1 && second.stderr.contains("another member is sharing")
                && second.stderr.split(separator: "\n").count == 1, "\(second.stderr)")
        let full = world.dir.path + "/bob.y4m", small = world.dir.path + "/carol.y4m"
        let bobWatch = try screen(world, bob, ["watch", channel, "--record", full, "--quality", "1080p", "--duration", "3.5"])
        // Carol joins late, while the share is well under way, with her media inside the WebSocket.
        _ = try bobWatch.waitFor("first_picture")
        Thread.sleep(forTimeInterval: 1.5)
        let carolWatch = try screen(world, carol, ["watch", channel, "--record", small, "--quality", "360p", "--duration", "3",
                                                   "--media-over-websocket"])

        #expect(bobWatch.wait() == 0, "\(bobWatch.stderr)")
        #expect(carolWatch.wait() == 0, "\(carolWatch.stderr)")
        #expect(carolWatch.events("watching").first?["transport"] as? String == "websocket")
        let late = try #require(carolWatch.events("first_picture").first)
        let lateMs = try #require(late["after_join_ms"] as? Double)
        print("screen e2e: late joiner's first picture \(lateMs) ms after joining; bob's \(bobWatch.events("first_picture").first?["after_join_ms"] ?? "-") ms")
        #expect(lateMs < 1000)
        #expect(late["width"] as? Int == 640 && late["height"] as? Int == 360)

        // Bob's recording at 1080p, after its first second, against the screen.
        var reader = try Y4MReader(path: full)
        let frames = try reader.readAll()
        #expect(frames.count >= 45, "\(frames.count) frames")
        let settled = frames.dropFirst(30)
        #expect(!settled.isEmpty)
        let psnrs = try settled.map { try PictureQuality(reference: known.picture, reconstruction: $0).lumaPSNR }
        print("screen e2e: 1080p recording, \(frames.count) frames, PSNR after the first second min \(psnrs.min() ?? 0) dB")
        #expect(frames.allSatisfy { $0.width == 1920 && $0.height == 1080 })
        #expect((psnrs.min() ?? 0) >= 35)

        // Carol asked for 360p and got 640×360, matching the screen scaled down.
        var smallReader = try Y4MReader(path: small)
        let smallFrames = try smallReader.readAll()
        #expect(smallFrames.count >= 30 && smallFrames.allSatisfy { $0.width == 640 && $0.height == 360 })
        let reference360 = try ColorConversion.scale(known.picture, width: 640, height: 360, filter: .box)
        if let last = smallFrames.last {
            let psnr = try PictureQuality(reference: reference360, reconstruction: last).lumaPSNR
            print("screen e2e: 360p recording, last frame \(psnr) dB")
            #expect(psnr >= 35)
        }
        let carolStatistics = statistics(carolWatch)
        #expect(carolStatistics.contains { $0["layer"] as? Int == 0 && ($0["fps"] as? Int ?? 0) > 0 })

        // The sharer ends by itself at --duration, cleanly.
        #expect(sharer.wait(timeout: 30) == 0, "\(sharer.stderr)")
        #expect(!sharer.events("left").isEmpty)
        let final = try #require(sharer.events("statistics").last)
        #expect(final["final"] as? Bool == true && (final["keyframe_requests"] as? Int ?? 0) >= 1)

        // A member removed from the channel is refused by the relay, in one line.
        let carolID = try #require(try ok(world, carol, ["id", "show"]).first?["id"] as? String)
        try ok(world, alice, ["channel", "kick", channel, carolID])
        let kicked = try at(world, carol, ["screen", "watch", channel, "--duration", "3"])
        #expect(kicked.status == 1 && kicked.stderr.contains("not a member") && kicked.stderr.split(separator: "\n").count == 1,
                "\(kicked.stderr)")
    }

    @Test(.timeLimit(.minutes(4)))
    func aWindowViewerDrawsThePictureAndALossyWatcherMovesDownAndBackUp() throws {
        let shared = try XvfbServer(width: 1280, height: 720)
        defer { shared.stop() }
        let viewerScreen = try XvfbServer(width: 1280, height: 720)
        defer { viewerScreen.stop() }
        let known = try knownScreen("screen-ui.png", width: 1280, height: 720)
        let painter = try XPainter(shared.displayName)
        painter.put(known.bgra, width: 1280, height: 720, on: painter.root)

        let world = try start()
        let (homes, channel) = try people(world, ["alice", "bob", "carol"])
        let (alice, bob, carol) = (homes[0], homes[1], homes[2])
        let sharer = try screen(world, alice, ["share", channel, "--display", shared.displayName, "--quality", "720p",
                                               "--duration", "30"])
        _ = try sharer.waitFor("sharing")
        // Carol's link loses 35 % of the datagrams from 3 s to 11 s after the proxy starts (she
        // joins about 1.5 s after it), then recovers; the relay moves her back up after 8 s clean.
        let proxy = Process()
        proxy.executableURL = URL(fileURLWithPath: Binaries.path("shroud-impair"))
        proxy.arguments = ["--listen", "127.0.0.1:0", "--target", "127.0.0.1:\(world.mediaPort)", "--loss", "0.35",
                           "--loss-from", "3", "--loss-until", "11", "--seed", "6", "--duration", "60"]
        let proxyOut = Pipe()
        proxy.standardOutput = proxyOut
        try runWithSignalsUnblocked(proxy)
        defer { if proxy.isRunning { proxy.terminate(); proxy.waitUntilExit() } }
        let first = String(decoding: proxyOut.fileHandleForReading.availableData, as: UTF8.self)
        let proxyPort = try #require(Int(first.filter(\.isNumber)))
        let lossy = try screen(world, carol, ["watch", channel, "--quality", "720p", "--media-port", "\(proxyPort)", "--duration", "25"])
        let viewer = try screen(world, bob, ["watch", channel, "--window", "--display", viewerScreen.displayName, "--quality", "720p",
                                             "--duration", "60"])
        let announced = try viewer.waitFor("window")
        let id = try #require((announced["window"] as? String).flatMap { UInt($0.dropFirst(2), radix: 16) })
        _ = try viewer.waitFor("first_picture")
        Thread.sleep(forTimeInterval: 1.5)   // the picture settles (a still screen refines over a second)

        // A screenshot of the viewer's window is the shared screen (scaled to the window's size).
        let display = try X11Display(name: viewerScreen.displayName)
        let shot = try ScreenCapturer(display: display, source: .window(id), allowSharedMemory: false).captureFrame()
        let picture = try ColorConversion.bgraToI420(shot.pixels, width: shot.width & ~1, height: shot.height & ~1, stride: shot.stride)
        let place = VideoWindow.placement(of: PixelSize(width: 1280, height: 720), in: PixelSize(width: picture.width, height: picture.height))
        let expected = try ColorConversion.scale(known.picture, width: place.width, height: place.height, filter: .box)
        let cropped = try crop(picture, x: place.x, y: place.y, width: place.width, height: place.height)
        let psnr = try PictureQuality(reference: expected, reconstruction: cropped).lumaPSNR
        print("screen e2e: viewer window \(shot.width)x\(shot.height), screenshot vs the shared screen \(psnr) dB")
        #expect(psnr >= 30)
        var title: UnsafeMutablePointer<CChar>?
        let viewerPainter = try XPainter(viewerScreen.displayName)
        XFetchName(viewerPainter.display, Window(id), &title)
        let name = title.map { String(cString: $0) } ?? ""
        if let title { XFree(title) }
        #expect(name.contains("720p") && name.contains(channel), "title: \(name)")

        // The window manager's close button ends the watch cleanly, long before its --duration.
        var event = XEvent()
        event.xclient.type = ClientMessage
        event.xclient.window = Window(id)
        event.xclient.message_type = XInternAtom(viewerPainter.display, "WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data.l.0 = Int(bitPattern: XInternAtom(viewerPainter.display, "WM_DELETE_WINDOW", 0))
        XSendEvent(viewerPainter.display, Window(id), 0, 0, &event)
        XSync(viewerPainter.display, 0)
        #expect(viewer.wait(timeout: 10) == 0, "\(viewer.stderr)")
        #expect(!viewer.events("left").isEmpty)

        // The lossy watcher: the top layer, then the 360p layer during the loss, then the top again.
        #expect(lossy.wait(timeout: 60) == 0, "\(lossy.stderr)")
        let seconds = statistics(lossy)
        let layers = seconds.compactMap { $0["layer"] as? Int }
        print("screen e2e: lossy watcher's layer and loss each second: \(seconds.map { "\($0["layer"] ?? "-")/\($0["loss_percent"] ?? "-")%" })")
        let down = try #require(layers.firstIndex(of: 0), "never moved down: \(layers)")
        #expect(layers[..<down].contains(1))
        #expect(layers[down...].contains(1), "never moved back up: \(layers)")
        #expect(sharer.wait(timeout: 30) == 0, "\(sharer.stderr)")
    }

    @Test(.timeLimit(.minutes(3)))
    func oneSharedWindowIsRecordedAsVP8() throws {
        let server = try XvfbServer(width: 1280, height: 720)
        defer { server.stop() }
        let known = try knownScreen("screen-code.png", width: 800, height: 600)
        let painter = try XPainter(server.displayName)
        let window = painter.createWindow(x: 100, y: 50, width: 800, height: 600)
        painter.put(known.bgra, width: 800, height: 600, on: window)

        let world = try start()
        let (homes, channel) = try people(world, ["alice", "bob"])
        let sharer = try screen(world, homes[0], ["share", channel, "--display", server.displayName, "--window", "0x" + String(window, radix: 16),
                                                  "--quality", "720p", "--duration", "5"])
        _ = try sharer.waitFor("sharing")
        let recording = world.dir.path + "/window.ivf"
        let watcher = try screen(world, homes[1], ["watch", channel, "--record", recording, "--duration", "3"])
        #expect(watcher.wait() == 0, "\(watcher.stderr)")
        #expect(sharer.wait(timeout: 30) == 0, "\(sharer.stderr)")

        // The IVF holds the decrypted VP8 frames: they decode, at the window's size (below 720p,
        // never enlarged), to the window's content.
        var reader = try IVFReader(path: recording)
        let frames = try reader.readAll()
        #expect(frames.count >= 30 && frames.first?.isKeyframe == true)
        let decoder = try VP8Decoder()
        var last: I420Frame?
        for frame in frames { last = try decoder.decode(frame.data).last ?? last }
        let picture = try #require(last)
        #expect(picture.width == 800 && picture.height == 600)
        let psnr = try PictureQuality(reference: known.picture, reconstruction: picture).lumaPSNR
        print("screen e2e: shared window, last IVF frame \(psnr) dB")
        #expect(psnr >= 35)
    }

    /// Alice kicks Carol mid-share: Carol's watch ends (exit 1, a reason), Alice draws a new screen
    /// key that Bob gets and Carol never does, and Bob's pictures continue under it.
    @Test(.timeLimit(.minutes(3)))
    func aKickedWatcherNeverGetsTheNextKey() throws {
        let server = try XvfbServer(width: 1280, height: 720)
        defer { server.stop() }
        let known = try knownScreen("screen-text.png", width: 1280, height: 720)
        let painter = try XPainter(server.displayName)
        painter.put(known.bgra, width: 1280, height: 720, on: painter.root)
        let world = try start()
        let (homes, channel) = try people(world, ["alice", "bob", "carol"])
        let (alice, bob, carol) = (homes[0], homes[1], homes[2])
        let carolID = try #require(try ok(world, carol, ["id", "show"]).first?["id"] as? String)

        let sharer = try screen(world, alice, ["share", channel, "--display", server.displayName, "--quality", "720p", "--duration", "16"])
        let firstKey = try #require(try sharer.waitFor("screen_key")["key_id"] as? String)
        let bobWatch = try screen(world, bob, ["watch", channel, "--quality", "360p", "--duration", "12"])
        let carolWatch = try screen(world, carol, ["watch", channel, "--quality", "360p", "--duration", "12"])
        for watch in [bobWatch, carolWatch] { _ = try watch.waitFor("first_picture") }

        try ok(world, alice, ["channel", "kick", channel, carolID])
        let secondKey = try #require(try sharer.waitFor("screen_key", count: 2)["key_id"] as? String)
        #expect(secondKey != firstKey)
        #expect(carolWatch.wait(timeout: 30) == 1)
        #expect(carolWatch.stderr.contains("removed"), "\(carolWatch.stderr)")
        #expect(!carolWatch.events("screen_key").contains { $0["key_id"] as? String == secondKey })

        #expect(bobWatch.wait(timeout: 30) == 0, "\(bobWatch.stderr)")
        #expect(bobWatch.events("screen_key").contains { $0["key_id"] as? String == secondKey })
        // Bob kept watching under the new key: pictures in his last seconds.
        let lastSeconds = statistics(bobWatch).suffix(3)
        #expect(!lastSeconds.isEmpty && lastSeconds.allSatisfy { ($0["fps"] as? Int ?? 0) > 0 }, "\(statistics(bobWatch))")
        #expect(sharer.wait(timeout: 30) == 0, "\(sharer.stderr)")
    }

    @Test(.timeLimit(.minutes(1)))
    func usageErrorsExitWithTwo() throws {
        let dir = TemporaryDirectory()
        let home = ["--home", dir.path + "/nobody"]
        for arguments in [["share", "c", "--duration", "86401"], ["share", "c", "--duration", "0"], ["share", "c", "--fps", "121"],
                          ["share", "c", "--window", "not-a-window"], ["watch", "c", "--record", "x.mp4"],
                          ["watch", "c", "--window", "--record", "x.ivf"], ["watch", "c", "--fps", "0"]] {
            let result = try run(shroud, home + ["screen"] + arguments, environment: passphrase, timeout: 30)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
        }
        // At the limits the arguments are accepted; the missing profile is then a runtime failure.
        for arguments in [["share", "c", "--duration", "86400", "--fps", "120"], ["watch", "c", "--duration", "86400", "--fps", "1"]] {
            let result = try run(shroud, home + ["screen"] + arguments, environment: passphrase, timeout: 30)
            #expect(result.status == 1 && result.stderr.split(separator: "\n").count == 1, "\(arguments): \(result.stderr)")
        }
    }

    private func crop(_ picture: I420Frame, x: Int, y: Int, width: Int, height: Int) throws -> I420Frame {
        var out = try I420Frame(width: width, height: height, luma: 0)
        for row in 0 ..< height {
            let from = (y + row) * picture.width + x
            out.y.replaceSubrange(row * width ..< (row + 1) * width, with: picture.y[from ..< from + width])
        }
        return out
    }
}
