import CX11
import Foundation
import Synchronization

/// The size of a screen or window in pixels.
public struct PixelSize: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var width: Int
    public var height: Int
    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }
    public var description: String { "\(width)x\(height)" }
}

/// A connection to an X server (`:N`). Owns the Xlib `Display`; closed in `deinit`.
///
/// Xlib reports request errors (BadWindow, BadMatch, BadAccess) asynchronously through a
/// process-wide handler whose default calls `exit()`. Shroud installs its own handler once, which
/// records the error against its display, so a closed window or a refused shared-memory segment
/// becomes a `MediaError` instead of ending the process. Not thread-safe: use one display from one
/// thread at a time.
public final class X11Display {
    /// The display name as given (`:42`), or `$DISPLAY` when none was given.
    public let name: String
    let handle: OpaquePointer
    let screen: Int32

    /// Opens `name` (e.g. `":42"`); `nil` uses `$DISPLAY`.
    public init(name: String? = nil) throws {
        X11ErrorTrap.installOnce()
        let resolved = name ?? ProcessInfo.processInfo.environment["DISPLAY"] ?? ""
        guard !resolved.isEmpty else {
            throw MediaError.device("no X display given and DISPLAY is not set")
        }
        guard let display = XOpenDisplay(resolved) else {
            throw MediaError.device("cannot open X display \(resolved)")
        }
        self.name = resolved
        self.handle = display
        self.screen = shroud_x_default_screen(display)
        // Without this, Xlib calls exit() when the server goes away (killed Xvfb, ended session).
        XSetIOErrorExitHandler(display, { display, _ in
            if let display { X11ErrorTrap.markLost(display) }
        }, nil)
    }

    deinit {
        XCloseDisplay(handle)
        X11ErrorTrap.forget(handle)  // after closing: closing a lost display reports it again
    }

    /// The current size of the default screen (asked from the server, so it follows RandR changes).
    public func screenSize() throws -> PixelSize {
        try geometry(of: rootWindow)
    }

    /// Whether the server offers the MIT-SHM extension (`Xvfb -extension MIT-SHM` turns it off).
    public var offersSharedMemory: Bool {
        XShmQueryExtension(handle) != 0
    }

    var rootWindow: Window { shroud_x_root_window(handle, screen) }

    /// The attributes of `window` (size, depth, visual, map state), or a `MediaError` when it does
    /// not exist (any more). `XGetWindowAttributes` waits for its reply, so its error has arrived
    /// when it returns.
    func attributes(of window: Window) throws -> XWindowAttributes {
        var attributes = XWindowAttributes()
        let status = try trappingErrors("window \(Self.hex(window))", sync: false) {
            XGetWindowAttributes(handle, window, &attributes)
        }
        guard status != 0 else {
            throw MediaError.device("no such X window \(Self.hex(window)) on \(name)")
        }
        return attributes
    }

    func geometry(of window: Window) throws -> PixelSize {
        let attributes = try attributes(of: window)
        return PixelSize(width: Int(attributes.width), height: Int(attributes.height))
    }

    /// Runs `body` and throws the first X error it caused. Requests without a reply need `sync`
    /// (an `XSync` round trip) for their error to arrive; requests that wait for a reply do not.
    /// `subject` names what the request was about, for the message.
    func trappingErrors<R>(_ subject: String, sync: Bool, _ body: () throws -> R) throws -> R {
        _ = X11ErrorTrap.take(handle)
        // The X error or lost connection explains a failed body better than the body's own error.
        let result = Result { try body() }
        if sync { XSync(handle, 0) }
        if X11ErrorTrap.isLost(handle) {
            throw MediaError.device("lost the connection to X display \(name)")
        }
        if let code = X11ErrorTrap.take(handle) {
            throw MediaError.device(X11ErrorTrap.reason(code: code, subject: subject, display: name))
        }
        return try result.get()
    }

    /// The error recorded for this display since the last call, if any, without a round trip.
    func takeError() -> UInt8? { X11ErrorTrap.take(handle) }

    static func hex(_ window: Window) -> String { "0x" + String(window, radix: 16) }
}

/// The process-wide Xlib error handlers and the errors they recorded, per display.
enum X11ErrorTrap {
    private static let errors = Mutex<[UInt: UInt8]>([:])
    private static let lost = Mutex<Set<UInt>>([])

    private static let installed: Bool = {
        _ = XInitThreads()
        _ = XSetErrorHandler { display, event in
            guard let display, let event else { return 0 }
            let key = UInt(bitPattern: Int(bitPattern: UnsafeMutableRawPointer(display)))
            let code = event.pointee.error_code
            X11ErrorTrap.errors.withLock { table in
                // Keep the first error: later ones are usually consequences of it.
                if table[key] == nil { table[key] = code }
            }
            return 0
        }
        // Called first when a connection breaks; the default prints and the per-display exit
        // handler (set in `X11Display.init`) then records the loss instead of exiting.
        _ = XSetIOErrorHandler { _ in 0 }
        return true
    }()

    static func installOnce() { _ = installed }

    private static func key(_ display: OpaquePointer) -> UInt {
        UInt(bitPattern: Int(bitPattern: UnsafeMutableRawPointer(display)))
    }

    static func take(_ display: OpaquePointer) -> UInt8? {
        errors.withLock { $0.removeValue(forKey: key(display)) }
    }

    static func forget(_ display: OpaquePointer) {
        _ = take(display)
        _ = lost.withLock { $0.remove(key(display)) }
    }

    static func markLost(_ display: OpaquePointer) {
        _ = lost.withLock { $0.insert(key(display)) }
    }

    static func isLost(_ display: OpaquePointer) -> Bool {
        lost.withLock { $0.contains(key(display)) }
    }

    static func reason(code: UInt8, subject: String, display: String) -> String {
        switch Int32(code) {
        case BadWindow, BadDrawable: return "no such X window: \(subject) on \(display)"
        case BadMatch: return "X server refused the capture of \(subject) on \(display) (not viewable or partly off screen)"
        case BadAccess: return "X server refused access for \(subject) on \(display)"
        case BadAlloc: return "X server ran out of memory for \(subject) on \(display)"
        default: return "X error \(code) for \(subject) on \(display)"
        }
    }
}

/// An X server found on this machine: its display name and, if it could be opened, its size.
public struct X11DisplayInfo: Equatable, Sendable {
    public var name: String
    /// The default screen's size, or `nil` when the display could not be opened.
    public var screenSize: PixelSize?
    public var offersSharedMemory: Bool

    public init(name: String, screenSize: PixelSize?, offersSharedMemory: Bool) {
        self.name = name
        self.screenSize = screenSize
        self.offersSharedMemory = offersSharedMemory
    }
}

extension X11Display {
    /// Where local X servers put their sockets (`X0`, `X1`, …).
    public static let socketDirectory = "/tmp/.X11-unix"

    /// Lists the X servers with a socket in `directory`, trying to open each one.
    public static func availableDisplays(socketDirectory directory: String = socketDirectory) -> [X11DisplayInfo] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        let numbers = entries.compactMap { entry -> Int? in
            guard entry.hasPrefix("X") else { return nil }
            return Int(entry.dropFirst())
        }.sorted()
        return numbers.map { number in
            let name = ":\(number)"
            guard let display = try? X11Display(name: name) else {
                return X11DisplayInfo(name: name, screenSize: nil, offersSharedMemory: false)
            }
            return X11DisplayInfo(name: name, screenSize: try? display.screenSize(),
                                  offersSharedMemory: display.offersSharedMemory)
        }
    }
}
