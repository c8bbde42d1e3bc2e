import CX11
import Foundation
import ShroudTestSupport
import Testing
@testable import ShroudMedia

/// The viewer window against a real X server: it draws, and an independent capture of its window
/// (XGetImage on the window's drawable, through a second connection) is compared with the picture.
///
/// Threshold: the screenshot has been through I420 → BGRA (in the viewer) and BGRA → I420 (in the
/// comparison), both BT.601 limited range in libyuv; rounding alone costs about ±1 level of luma,
/// which is near 50 dB. 40 dB leaves room for that and for the bilinear scale, while a wrong
/// picture, a shifted one or swapped channels scores far below (the control case here is < 20 dB).
@Suite("X11 video window under Xvfb", .serialized)
struct VideoWindowTests {
    static let threshold = 40.0

    func screenshot(_ server: XvfbServer, _ window: VideoWindow) throws -> I420Frame {
        let display = try X11Display(name: server.displayName)
        let frame = try ScreenCapturer(display: display, source: .window(window.windowID), allowSharedMemory: false).captureFrame()
        return try ColorConversion.bgraToI420(frame.pixels, width: frame.width, height: frame.height, stride: frame.stride)
    }

    /// Calls `processEvents` until `condition` holds (events arrive asynchronously), for at most 5 s.
    func waitFor(_ window: VideoWindow, _ condition: () -> Bool) throws {
        let deadline = Date().addingTimeInterval(5)
        while !condition(), Date() < deadline {
            try window.processEvents()
            usleep(10_000)
        }
    }

    @Test(arguments: [true, false])
    func drawsAKnownFrameThatAScreenshotMatches(sharedMemory: Bool) throws {
        let server = try XvfbServer(width: 800, height: 600)
        defer { server.stop() }
        let display = try X11Display(name: server.displayName)
        let window = try VideoWindow(display: display, title: "alice — 360p", width: 640, height: 360, allowSharedMemory: sharedMemory)
        #expect(window.method == (sharedMemory ? .sharedMemory : .putImage))
        let picture = try Fixtures.screen("screen-ui").scaled(width: 640, height: 360)
        try window.draw(picture)
        let shot = try screenshot(server, window)
        #expect(shot.width == 640 && shot.height == 360)
        let psnr = try PictureQuality(reference: picture, reconstruction: shot).lumaPSNR
        print("video window (\(window.method.rawValue)) screenshot: \(psnr) dB luma")
        #expect(psnr >= Self.threshold)
        // Control: another picture does not match the screenshot.
        let other = try Fixtures.screen("screen-code").scaled(width: 640, height: 360)
        #expect(try PictureQuality(reference: other, reconstruction: shot).lumaPSNR < 20)
        #expect(window.framesDrawn == 1)
    }

    @Test func followsResizesAndLetterboxes() throws {
        let server = try XvfbServer(width: 1600, height: 1000)
        defer { server.stop() }
        let display = try X11Display(name: server.displayName)
        let window = try VideoWindow(display: display, title: "bob — 1080p", width: 640, height: 360)
        let picture = try Fixtures.screen("screen-text")
        try window.draw(picture)
        let painter = try XPainter(server.displayName)
        painter.resize(Window(window.windowID), width: 1280, height: 720)
        try waitFor(window) { window.size == PixelSize(width: 1280, height: 720) }
        #expect(window.size == PixelSize(width: 1280, height: 720))
        // The last picture is redrawn at the new size without a new frame.
        let expected = try ColorConversion.scale(picture, width: 1280, height: 720, filter: .box)
        let shot = try screenshot(server, window)
        #expect(try PictureQuality(reference: expected, reconstruction: shot).lumaPSNR >= Self.threshold)
        // A wide window: the picture keeps its shape, centred between black bars.
        painter.resize(Window(window.windowID), width: 1000, height: 300)
        try waitFor(window) { window.size == PixelSize(width: 1000, height: 300) }
        let place = VideoWindow.placement(of: PixelSize(width: 1920, height: 1080), in: window.size)
        #expect(place.width == 532 && place.height == 300 && place.x == 234 && place.y == 0)
        let wide = try screenshot(server, window)
        #expect(wide.y[150 * 1000 + 100] == 16 && wide.y[150 * 1000 + 900] == 16) // black (limited range)
        let middle = try ColorConversion.scale(picture, width: 532, height: 300, filter: .box)
        var cropped = try I420Frame(width: 532, height: 300)
        for row in 0 ..< 300 { for column in 0 ..< 532 { cropped.y[row * 532 + column] = wide.y[row * 1000 + 234 + column] } }
        #expect(try PictureQuality(reference: middle, reconstruction: cropped).lumaPSNR >= Self.threshold)
    }

    @Test func titleAndWindowManagerClose() throws {
        let server = try XvfbServer(width: 800, height: 600)
        defer { server.stop() }
        let display = try X11Display(name: server.displayName)
        let window = try VideoWindow(display: display, title: "Zoë shares — 720p", width: 320, height: 180)
        let painter = try XPainter(server.displayName)
        let handle = painter.display
        // The UTF-8 title, as a window manager reads it.
        func netTitle() -> String? {
            var type: Atom = 0, format: Int32 = 0, count: UInt = 0, after: UInt = 0
            var data: UnsafeMutablePointer<UInt8>?
            guard XGetWindowProperty(handle, Window(window.windowID), XInternAtom(handle, "_NET_WM_NAME", 0), 0, 1024, 0,
                                     XInternAtom(handle, "UTF8_STRING", 0), &type, &format, &count, &after, &data) == Success,
                  let data else { return nil }
            defer { XFree(data) }
            return String(decoding: UnsafeBufferPointer(start: data, count: Int(count)), as: UTF8.self)
        }
        #expect(netTitle() == "Zoë shares — 720p")
        window.setTitle("Zoë shares — 360p")
        #expect(netTitle() == "Zoë shares — 360p")
        var name: UnsafeMutablePointer<CChar>?
        XFetchName(handle, Window(window.windowID), &name)
        #expect(name.map { String(cString: $0) } == "Zo? shares ? 360p")
        if let name { XFree(name) }

        // The window manager's close button: WM_PROTOCOLS / WM_DELETE_WINDOW.
        var event = XEvent()
        event.xclient.type = ClientMessage
        event.xclient.window = Window(window.windowID)
        event.xclient.message_type = XInternAtom(handle, "WM_PROTOCOLS", 0)
        event.xclient.format = 32
        event.xclient.data.l.0 = Int(bitPattern: XInternAtom(handle, "WM_DELETE_WINDOW", 0))
        XSendEvent(handle, Window(window.windowID), 0, 0, &event)
        XSync(handle, 0)
        try waitFor(window) { window.isClosed }
        #expect(window.isClosed)
        #expect(try window.processEvents() == false)
        #expect(throws: MediaError.self) { try window.draw(try I420Frame(width: 320, height: 180)) }
        // The window is gone from the server.
        let other = try X11Display(name: server.displayName)
        #expect(throws: MediaError.self) { try ScreenCapturer(display: other, source: .window(window.windowID)) }
    }

    @Test func destroyedByAnotherClientAndBadSizes() throws {
        let server = try XvfbServer(width: 400, height: 300)
        defer { server.stop() }
        let display = try X11Display(name: server.displayName)
        #expect(throws: MediaError.self) { try VideoWindow(display: display, title: "x", width: 0, height: 10) }
        #expect(throws: MediaError.self) {
            try VideoWindow(display: display, title: "x", width: VideoWindow.maximumDimension + 1, height: 10)
        }
        let window = try VideoWindow(display: display, title: "x", width: 100, height: 100)
        let painter = try XPainter(server.displayName)
        painter.destroy(Window(window.windowID))
        try waitFor(window) { window.isClosed }
        #expect(window.isClosed)
        window.close() // idempotent, and must not free the server's window twice
    }
}

extension I420Frame {
    func scaled(width: Int, height: Int) throws -> I420Frame {
        try ColorConversion.scale(self, width: width, height: height, filter: .box)
    }
}
