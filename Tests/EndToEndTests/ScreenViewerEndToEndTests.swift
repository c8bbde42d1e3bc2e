import CX11
import Foundation
import ShroudMedia
import ShroudTestSupport
import Testing

/// The viewer window as a user meets it before a call: `shroud media play` of a screen recording
/// on a private Xvfb, checked by a screenshot of its window through another X connection, and
/// closed through the window manager's close message.
@Suite(.serialized) struct ScreenViewerEndToEndTests {
    let shroud = Binaries.path("shroud")

    @Test(.timeLimit(.minutes(2))) func playsARecordingInAWindowThatAScreenshotMatches() throws {
        let server = try XvfbServer(width: 1600, height: 900)
        defer { server.stop() }
        let bgra = try Fixtures.run(["-v", "error", "-i", Fixtures.path("screen-ui.png"), "-vf", "scale=1280:720",
                                     "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
        let painter = try XPainter(server.displayName)
        painter.put(bgra, width: 1280, height: 720, on: painter.root)
        let dir = TemporaryDirectory()
        let recording = dir.path + "/screen.y4m"
        let recorded = try run(shroud, ["media", "record-screen", "--display", server.displayName, "--quality", "360p",
                                        "--fps", "10", "--duration", "0.5", "--out", recording], timeout: 60)
        #expect(recorded.status == 0, "\(recorded.stderr)")
        var reader = try Y4MReader(path: recording)
        let last = try #require(try reader.readAll().last)

        // Shown enlarged in a 1280×720 window (bilinear), then held up for the screenshot.
        let player = try BackgroundProcess(shroud, ["media", "play", recording, "--display", server.displayName,
                                                    "--width", "1280", "--height", "720", "--hold", "60"])
        let announced = try player.waitForLine(containing: "in window 0x")
        let hex = try #require(announced.split(separator: " ").first { $0.hasPrefix("0x") })
        let id = try #require(UInt(hex.dropFirst(2), radix: 16))
        _ = try player.waitForLine(containing: "Last frame shown")
        let display = try X11Display(name: server.displayName)
        let shot = try ScreenCapturer(display: display, source: .window(id), allowSharedMemory: false).captureFrame()
        #expect(shot.width == 1280 && shot.height == 720)
        let picture = try ColorConversion.bgraToI420(shot.pixels, width: shot.width, height: shot.height, stride: shot.stride)
        let expected = try ColorConversion.scale(last, width: 1280, height: 720, filter: .bilinear)
        // The same 40 dB bar as the window's unit tests (only the BGRX round trip differs).
        let psnr = try PictureQuality(reference: expected, reconstruction: picture).lumaPSNR
        print("media play: window screenshot vs the recording's last frame, enlarged: \(psnr) dB")
        #expect(psnr >= 40)

        // The window manager's close button ends the player cleanly.
        var event = XEvent()
        event.xclient.type = ClientMessage
        event.xclient.window = Window(id)
        event.xclient.message_type = XInternAtom(painter.display, "WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data.l.0 = Int(bitPattern: XInternAtom(painter.display, "WM_DELETE_WINDOW", 0))
        XSendEvent(painter.display, Window(id), 0, 0, &event)
        XSync(painter.display, 0)
        let deadline = Date().addingTimeInterval(10)
        while player.process.isRunning, Date() < deadline { usleep(20_000) }
        #expect(!player.process.isRunning)
        if player.process.isRunning { _ = player.stop() } else { #expect(player.process.terminationStatus == 0) }
    }

    @Test(.timeLimit(.minutes(1))) func aBrokenRecordingIsAOneLineError() throws {
        let dir = TemporaryDirectory()
        let path = dir.path + "/broken.ivf"
        try Data("DKIF not really a recording".utf8).write(to: URL(fileURLWithPath: path))
        let result = try run(shroud, ["media", "play", path, "--display", ":99999"], timeout: 30)
        #expect(result.status == 1)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        let wrong = try run(shroud, ["media", "play", dir.path + "/x.mp4"], timeout: 30)
        #expect(wrong.status != 0)
    }
}
