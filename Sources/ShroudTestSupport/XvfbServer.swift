import CX11
import Foundation
import ShroudMedia

/// A private Xvfb for one test: it picks a free display number itself (`-displayfd`, which it
/// writes once it accepts connections), and is terminated in `stop()` or at the latest in
/// `deinit`, so a failing test does not leave it running. It also runs with `-terminate` while
/// this object holds one connection open, so if the test process dies outright the server
/// exits with it.
public final class XvfbServer {
    public let displayName: String
    private let process: Process
    private var keeper: OpaquePointer?

    /// Starts `Xvfb -screen 0 WxHx24 -nolisten tcp` plus `extraArguments`
    /// (e.g. `["-extension", "MIT-SHM"]` to turn shared memory off).
    public init(width: Int = 640, height: Int = 480, extraArguments: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/Xvfb")
        process.arguments = ["-displayfd", "1", "-screen", "0", "\(width)x\(height)x24",
                             "-nolisten", "tcp", "-terminate"] + extraArguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try runWithSignalsUnblocked(process)
        self.process = process
        guard let number = Self.readLine(output.fileHandleForReading.fileDescriptor, timeoutSeconds: 20),
              let display = Int(number) else {
            process.terminate()
            process.waitUntilExit()
            throw MediaError.device("Xvfb did not start")
        }
        displayName = ":\(display)"
        keeper = XOpenDisplay(displayName)
    }

    public func stop() {
        if let keeper {
            XCloseDisplay(keeper)
            self.keeper = nil
        }
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    deinit { stop() }

    /// Reads one line from `fd`, waiting at most `timeoutSeconds`.
    private static func readLine(_ fd: Int32, timeoutSeconds: Int) -> String? {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(TimeInterval(timeoutSeconds))
        while Date() < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 200) >= 0 else { return nil }
            if poller.revents == 0 { continue }
            var byte: UInt8 = 0
            guard read(fd, &byte, 1) == 1 else { return nil }
            if byte == UInt8(ascii: "\n") { return String(decoding: bytes, as: UTF8.self) }
            bytes.append(byte)
        }
        return nil
    }
}

/// Starts `process` with SIGTERM and SIGINT unblocked. A child inherits the signal mask of the
/// thread that spawns it, and the test runner's worker threads block those signals: without this,
/// `terminate()` would never reach the child and `waitUntilExit()` would hang.
public func runWithSignalsUnblocked(_ process: Process) throws {
    var signals = sigset_t()
    sigemptyset(&signals)
    sigaddset(&signals, SIGTERM)
    sigaddset(&signals, SIGINT)
    var previous = sigset_t()
    pthread_sigmask(SIG_UNBLOCK, &signals, &previous)
    defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
    try process.run()
}

/// A second, independent Xlib connection the tests draw with, so what the capture sees was put
/// there by the X server and not by Shroud's code.
public final class XPainter {
    public let display: OpaquePointer
    public let screen: Int32

    public init(_ name: String) throws {
        guard let display = XOpenDisplay(name) else { throw MediaError.device("painter cannot open \(name)") }
        // If the server is stopped before this connection is closed, closing it must not end the
        // test process through Xlib's default exit().
        XSetIOErrorExitHandler(display, { _, _ in }, nil)
        self.display = display
        self.screen = shroud_x_default_screen(display)
    }

    deinit { XCloseDisplay(display) }

    public var root: Window { shroud_x_root_window(display, screen) }

    /// Creates and maps a window that no window manager moves (there is none; override-redirect
    /// makes that explicit).
    public func createWindow(x: Int, y: Int, width: Int, height: Int) -> Window {
        var attributes = XSetWindowAttributes()
        attributes.override_redirect = 1
        let window = XCreateWindow(display, root, Int32(x), Int32(y), UInt32(width), UInt32(height), 0,
                                   shroud_x_default_depth(display, screen), UInt32(InputOutput),
                                   shroud_x_default_visual(display, screen), UInt(CWOverrideRedirect),
                                   &attributes)
        XMapWindow(display, window)
        XSync(display, 0)
        return window
    }

    /// Puts `pixels` (BGRX, `width × 4` bytes per row) at (x, y) of `drawable`, and waits until the
    /// server has done it.
    public func put(_ pixels: [UInt8], width: Int, height: Int, on drawable: Window, x: Int = 0, y: Int = 0) {
        let data = malloc(pixels.count)!.assumingMemoryBound(to: CChar.self)
        pixels.withUnsafeBytes { data.update(from: $0.bindMemory(to: CChar.self).baseAddress!, count: pixels.count) }
        let image = XCreateImage(display, shroud_x_default_visual(display, screen),
                                 UInt32(shroud_x_default_depth(display, screen)), ZPixmap, 0, data,
                                 UInt32(width), UInt32(height), 32, Int32(width * 4))!
        let gc = XCreateGC(display, drawable, 0, nil)
        XPutImage(display, drawable, gc, image, 0, 0, Int32(x), Int32(y), UInt32(width), UInt32(height))
        XFreeGC(display, gc)
        XSync(display, 0)
        _ = shroud_x_destroy_image(image)  // frees `data` too
    }

    public func resize(_ window: Window, width: Int, height: Int) {
        XResizeWindow(display, window, UInt32(width), UInt32(height))
        XSync(display, 0)
    }

    public func destroy(_ window: Window) {
        XDestroyWindow(display, window)
        XSync(display, 0)
    }
}

/// A BGRX test pattern in which every pixel differs from its neighbours and from the same pixel
/// of another `seed`.
public func testPattern(width: Int, height: Int, seed: Int) -> [UInt8] {
    var pixels = [UInt8](repeating: 0, count: width * height * 4)
    for y in 0..<height {
        for x in 0..<width {
            let i = (y * width + x) * 4
            pixels[i] = UInt8(truncatingIfNeeded: x &+ seed)
            pixels[i + 1] = UInt8(truncatingIfNeeded: y &* 3 &+ seed)
            pixels[i + 2] = UInt8(truncatingIfNeeded: (x ^ y) &+ seed &* 7)
            pixels[i + 3] = 0
        }
    }
    return pixels
}

/// Whether the B, G and R bytes of every pixel of `frame` equal `pattern` (the X byte is
/// unspecified).
public func colours(of frame: ScreenFrame, equal pattern: [UInt8]) -> Bool {
    guard frame.stride >= frame.width * 4, pattern.count == frame.width * frame.height * 4 else { return false }
    for y in 0..<frame.height {
        for x in 0..<frame.width {
            let f = y * frame.stride + x * 4, p = (y * frame.width + x) * 4
            if frame.pixels[f] != pattern[p] || frame.pixels[f + 1] != pattern[p + 1]
                || frame.pixels[f + 2] != pattern[p + 2] {
                return false
            }
        }
    }
    return true
}
