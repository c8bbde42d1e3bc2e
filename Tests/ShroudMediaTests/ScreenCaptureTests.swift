import ShroudTestSupport
import CX11
import Foundation
import ShroudMedia
import Testing

/// Capture against a real X server: each test starts its own Xvfb and draws with an independent
/// Xlib connection.
@Suite("X11 screen capture under Xvfb", .serialized)
struct ScreenCaptureTests {
    @Test("root window via MIT-SHM is pixel-exact")
    func rootSharedMemory() throws {
        let server = try XvfbServer(width: 640, height: 480)
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let pattern = testPattern(width: 640, height: 480, seed: 1)
        painter.put(pattern, width: 640, height: 480, on: painter.root)

        let display = try X11Display(name: server.displayName)
        #expect(display.offersSharedMemory)
        #expect(try display.screenSize() == PixelSize(width: 640, height: 480))
        let capturer = try ScreenCapturer(display: display)
        #expect(capturer.method == .sharedMemory)
        let frame = try capturer.captureFrame()
        #expect(frame.width == 640 && frame.height == 480 && frame.stride == 640 * 4)
        #expect(colours(of: frame, equal: pattern))

        // The segment is reused: a new drawing shows up in the next frame.
        let second = testPattern(width: 640, height: 480, seed: 2)
        painter.put(second, width: 640, height: 480, on: painter.root)
        #expect(colours(of: try capturer.captureFrame(), equal: second))
        #expect(capturer.framesCaptured == 2)
    }

    @Test("root window via the XGetImage fallback is pixel-exact")
    func rootGetImage() throws {
        let server = try XvfbServer(width: 320, height: 200)
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let pattern = testPattern(width: 320, height: 200, seed: 3)
        painter.put(pattern, width: 320, height: 200, on: painter.root)

        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName),
                                          allowSharedMemory: false)
        #expect(capturer.method == .getImage)
        #expect(colours(of: try capturer.captureFrame(), equal: pattern))
        // The borrowed view sees the same bytes as the copy.
        let borrowedMatches = try capturer.withNextFrame { colours(of: $0.copy(), equal: pattern) }
        #expect(borrowedMatches)
    }

    @Test("a server without MIT-SHM falls back to XGetImage by itself")
    func serverWithoutSharedMemory() throws {
        let server = try XvfbServer(width: 320, height: 240, extraArguments: ["-extension", "MIT-SHM"])
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let pattern = testPattern(width: 320, height: 240, seed: 4)
        painter.put(pattern, width: 320, height: 240, on: painter.root)

        let display = try X11Display(name: server.displayName)
        #expect(!display.offersSharedMemory)
        let capturer = try ScreenCapturer(display: display)
        #expect(capturer.method == .getImage)
        #expect(colours(of: try capturer.captureFrame(), equal: pattern))
    }

    @Test("one window, both methods, follows a resize", arguments: [true, false])
    func oneWindow(sharedMemory: Bool) throws {
        let server = try XvfbServer(width: 640, height: 480)
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        painter.put(testPattern(width: 640, height: 480, seed: 9), width: 640, height: 480, on: painter.root)
        let window = painter.createWindow(x: 50, y: 40, width: 200, height: 100)
        let pattern = testPattern(width: 200, height: 100, seed: 5)
        painter.put(pattern, width: 200, height: 100, on: window)

        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName),
                                          source: .window(UInt(window)), allowSharedMemory: sharedMemory)
        #expect(capturer.method == (sharedMemory ? .sharedMemory : .getImage))
        let frame = try capturer.captureFrame()
        #expect(frame.width == 200 && frame.height == 100)
        #expect(colours(of: frame, equal: pattern))

        painter.resize(window, width: 120, height: 90)
        let smaller = testPattern(width: 120, height: 90, seed: 6)
        painter.put(smaller, width: 120, height: 90, on: window)
        let resized = try capturer.captureFrame()
        #expect(resized.width == 120 && resized.height == 90)
        #expect(colours(of: resized, equal: smaller))
        #expect(capturer.sizeChanges == 1)
        #expect(capturer.frameSize == PixelSize(width: 120, height: 90))
    }

    @Test("a window closed during capture is a MediaError")
    func windowClosed() throws {
        let server = try XvfbServer()
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let window = painter.createWindow(x: 0, y: 0, width: 64, height: 64)
        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName),
                                          source: .window(UInt(window)))
        _ = try capturer.captureFrame()
        painter.destroy(window)
        let error = #expect(throws: MediaError.self) { try capturer.captureFrame() }
        #expect(error?.description.contains("no such X window") == true)
    }

    @Test("a window that does not exist is a MediaError")
    func noSuchWindow() throws {
        let server = try XvfbServer()
        defer { server.stop() }
        let display = try X11Display(name: server.displayName)
        let error = #expect(throws: MediaError.self) {
            try ScreenCapturer(display: display, source: .window(0x3F_FFFF))
        }
        #expect(error?.description == "no such X window: window 0x3fffff on \(server.displayName)")
        // The display is still usable afterwards.
        #expect(try ScreenCapturer(display: display).captureFrame().width == 640)
    }

    @Test("an unmapped window is a MediaError, not garbage")
    func unmappedWindow() throws {
        let server = try XvfbServer()
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let window = painter.createWindow(x: 0, y: 0, width: 64, height: 64)
        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName),
                                          source: .window(UInt(window)))
        XUnmapWindow(painter.display, window)
        XSync(painter.display, 0)
        #expect(throws: MediaError.device("window 0x\(String(window, radix: 16)) on \(server.displayName) is not viewable")) {
            try capturer.captureFrame()
        }
    }

    @Test("a window partly off screen is a MediaError, for both methods", arguments: [true, false])
    func windowOffScreen(sharedMemory: Bool) throws {
        let server = try XvfbServer(width: 640, height: 480)
        defer { server.stop() }
        let painter = try XPainter(server.displayName)
        let window = painter.createWindow(x: 600, y: 10, width: 100, height: 50)
        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName),
                                          source: .window(UInt(window)), allowSharedMemory: sharedMemory)
        let error = #expect(throws: MediaError.self) { try capturer.captureFrame() }
        #expect(error?.description.contains("partly off screen") == true)
    }

    @Test("paced capture waits on the injected clock, never sleeping for real")
    func pacedCaptureOnVirtualTime() throws {
        let server = try XvfbServer(width: 160, height: 120)
        defer { server.stop() }
        let clock = VirtualClock(start: 5_000_000_000)
        let capturer = try ScreenCapturer(display: try X11Display(name: server.displayName))
        let paced = try PacedScreenCapture(capturer: capturer, framesPerSecond: 10, clock: clock)
        var times: [UInt64] = []
        for _ in 0..<4 {
            try paced.withNextFrame { frame, at in
                #expect(frame.width == 160)
                times.append(at)
            }
        }
        #expect(times == [5_000_000_000, 5_100_000_000, 5_200_000_000, 5_300_000_000])
        #expect(clock.sleeps == 3)
    }

    @Test("an X server that goes away is a MediaError, not an exit", arguments: [true, false])
    func serverGone(sharedMemory: Bool) throws {
        let server = try XvfbServer(width: 160, height: 120)
        let display = try X11Display(name: server.displayName)
        let capturer = try ScreenCapturer(display: display, allowSharedMemory: sharedMemory)
        _ = try capturer.captureFrame()
        server.stop()
        #expect(throws: MediaError.device("lost the connection to X display \(server.displayName)")) {
            try capturer.captureFrame()
        }
        #expect(throws: MediaError.self) { try display.screenSize() }
    }

    @Test("the display list shows a running Xvfb with its size")
    func displayList() throws {
        let server = try XvfbServer(width: 320, height: 200)
        defer { server.stop() }
        let entry = X11Display.availableDisplays().first { $0.name == server.displayName }
        #expect(entry?.screenSize == PixelSize(width: 320, height: 200))
        #expect(entry?.offersSharedMemory == true)
    }
}

/// A clock whose `sleep` moves time forward instead of waiting.
final class VirtualClock: PacingClock, @unchecked Sendable {
    private(set) var now: UInt64
    private(set) var sleeps = 0
    init(start: UInt64) { now = start }
    func nowNanoseconds() -> UInt64 { now }
    func sleep(untilNanoseconds deadline: UInt64) {
        sleeps += 1
        if deadline > now { now = deadline }
    }
    func advance(by nanoseconds: UInt64) { now += nanoseconds }
}

@Suite("X11 without a server")
struct X11ErrorTests {
    @Test("a display that does not exist is a MediaError")
    func noSuchDisplay() {
        #expect(throws: MediaError.device("cannot open X display :64999")) {
            try X11Display(name: ":64999")
        }
    }

    @Test("a stale socket entry is listed without a size")
    func staleSocket() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("shroud-x11-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Not a socket of a running server: X64998 cannot be opened.
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("X64998").path, contents: nil)
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("notes").path, contents: nil)
        let list = X11Display.availableDisplays(socketDirectory: directory.path)
        #expect(list == [X11DisplayInfo(name: ":64998", screenSize: nil, offersSharedMemory: false)])
    }

    @Test("capture size limit: at the limit accepted, one past refused, empty refused")
    func sizeLimit() throws {
        let limit = ScreenCapturer.maximumDimension
        try ScreenCapturer.checkSize(PixelSize(width: limit, height: limit), of: .rootWindow)
        #expect(throws: MediaError.self) {
            try ScreenCapturer.checkSize(PixelSize(width: limit + 1, height: 10), of: .rootWindow)
        }
        #expect(throws: MediaError.self) {
            try ScreenCapturer.checkSize(PixelSize(width: 10, height: limit + 1), of: .window(5))
        }
        #expect(throws: MediaError.self) {
            try ScreenCapturer.checkSize(PixelSize(width: 0, height: 10), of: .rootWindow)
        }
    }
}
