import CX11
import Glibc

/// How a `VideoWindow` puts pixels on the screen.
public enum DrawMethod: String, Equatable, Sendable {
    /// `XShmPutImage` from one shared-memory segment of the window's size (MIT-SHM).
    case sharedMemory = "shm"
    /// `XPutImage`: the pixels travel over the socket.
    case putImage = "putimage"
}

/// A top-level X11 window that shows decoded video (the `shroud screen watch --window` viewer).
/// Owns its X window and graphics context (destroyed in `close()` or `deinit`); the pixel buffer
/// has its own owner (`SharedMemoryImage` or `XImageBuffer`).
///
/// Each frame is scaled with libyuv to fit the window keeping its aspect ratio (box filter when
/// shrinking, bilinear when enlarging), converted to BGRA straight into the X image, and put with
/// `XShmPutImage` when the server offers MIT-SHM (else `XPutImage`); bars around it are black. The
/// window follows resizes (`ConfigureNotify`) and closes on the window manager's
/// `WM_DELETE_WINDOW` or when destroyed. Not thread-safe: one thread drives it, calling
/// `processEvents()` between frames.
public final class VideoWindow {
    /// Largest window side accepted, as for capture.
    public static let maximumDimension = ScreenCapturer.maximumDimension

    public let display: X11Display
    /// The X window id (for tests and `xwininfo`).
    public let windowID: UInt
    public private(set) var size: PixelSize
    public private(set) var method: DrawMethod
    public private(set) var title: String
    /// Set once the window was closed by the user, destroyed, or `close()` was called.
    public private(set) var isClosed = false
    public private(set) var framesDrawn = 0

    private let window: Window
    private let gc: GC
    private let deleteAtom: Atom
    private let allowSharedMemory: Bool
    private var segment: SharedMemoryImage?
    private var plainImage: XImageBuffer?
    /// The picture rectangle last drawn into the current buffer, so bars are cleared only when it moves.
    private var lastPlacement: (x: Int, y: Int, width: Int, height: Int)?
    private var lastFrame: I420Frame?

    public init(display: X11Display, title: String, width: Int, height: Int, allowSharedMemory: Bool = true) throws {
        let size = PixelSize(width: width, height: height)
        guard width > 0, height > 0, width <= Self.maximumDimension, height <= Self.maximumDimension else {
            throw MediaError.device("video window size \(size) is outside 1...\(Self.maximumDimension) on a side")
        }
        self.display = display
        self.size = size
        self.title = title
        self.allowSharedMemory = allowSharedMemory
        let handle = display.handle
        let black = shroud_x_black_pixel(handle, display.screen)
        window = try display.trappingErrors("video window", sync: true) {
            XCreateSimpleWindow(handle, display.rootWindow, 0, 0, UInt32(width), UInt32(height), 0, black, black)
        }
        windowID = UInt(window)
        XSelectInput(handle, window, StructureNotifyMask | ExposureMask)
        deleteAtom = XInternAtom(handle, "WM_DELETE_WINDOW", 0)
        var protocols = [deleteAtom]
        XSetWMProtocols(handle, window, &protocols, 1)
        gc = XCreateGC(handle, window, 0, nil)
        method = .putImage
        Self.storeTitle(title, display: display, window: window)
        XMapWindow(handle, window)
        XSync(handle, 0)
        try allocateImage()
    }

    deinit { close() }

    /// Destroys the window (idempotent).
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        segment = nil
        plainImage = nil
        XFreeGC(display.handle, gc)
        XDestroyWindow(display.handle, window)
        XSync(display.handle, 0)
        _ = display.takeError()  // the window may already be gone (destroyed by someone else)
    }

    public func setTitle(_ title: String) {
        guard !isClosed, title != self.title else { return }
        self.title = title
        Self.storeTitle(title, display: display, window: window)
        // A round trip, so the window manager (or a test) reading the title next sees the new one.
        XSync(display.handle, 0)
    }

    /// The legacy `WM_NAME` (Latin-1, so non-ASCII becomes "?") and the UTF-8 `_NET_WM_NAME`.
    private static func storeTitle(_ title: String, display: X11Display, window: Window) {
        let latin = String(title.unicodeScalars.map { $0.value < 0x80 ? Character($0) : "?" })
        XStoreName(display.handle, window, latin)
        let utf8 = Array(title.utf8)
        let name = XInternAtom(display.handle, "_NET_WM_NAME", 0)
        let type = XInternAtom(display.handle, "UTF8_STRING", 0)
        utf8.withUnsafeBufferPointer { bytes in
            _ = XChangeProperty(display.handle, window, name, type, 8, PropModeReplace, bytes.baseAddress, Int32(bytes.count))
        }
    }

    /// Handles what the server sent: resizes, exposure, close requests. Returns false once the
    /// window is closed.
    @discardableResult
    public func processEvents() throws -> Bool {
        guard !isClosed else { return false }
        var redraw = false
        while XPending(display.handle) > 0 {
            var event = XEvent()
            XNextEvent(display.handle, &event)
            switch event.type {
            case ConfigureNotify:
                let newSize = PixelSize(width: Int(event.xconfigure.width), height: Int(event.xconfigure.height))
                if newSize != size, newSize.width > 0, newSize.height > 0,
                   newSize.width <= Self.maximumDimension, newSize.height <= Self.maximumDimension {
                    size = newSize
                    try allocateImage()
                    redraw = true
                }
            case Expose:
                redraw = true
            case ClientMessage:
                if Atom(bitPattern: event.xclient.data.l.0) == deleteAtom { close(); return false }
            case DestroyNotify:
                // Destroyed by someone else: nothing of ours is left to free on the server.
                isClosed = true
                segment = nil
                plainImage = nil
                XFreeGC(display.handle, gc)
                return false
            default:
                break
            }
        }
        if X11ErrorTrap.isLost(display.handle) { throw MediaError.device("lost the connection to X display \(display.name)") }
        if redraw, let lastFrame { try draw(lastFrame) }
        return true
    }

    /// Where a `width`×`height` picture goes in the window: as large as fits, aspect kept, centred,
    /// on even sizes (I420).
    public static func placement(of picture: PixelSize, in window: PixelSize) -> (x: Int, y: Int, width: Int, height: Int) {
        var width = window.width
        var height = picture.height * window.width / max(1, picture.width)
        if height > window.height {
            height = window.height
            width = picture.width * window.height / max(1, picture.height)
        }
        width = max(2, width & ~1)
        height = max(2, height & ~1)
        width = min(width, window.width)
        height = min(height, window.height)
        return ((window.width - width) / 2, (window.height - height) / 2, width, height)
    }

    /// Shows one picture, scaled to fit the window.
    public func draw(_ frame: I420Frame) throws {
        guard !isClosed else { throw MediaError.device("video window on \(display.name) is closed") }
        lastFrame = frame
        let place = Self.placement(of: PixelSize(width: frame.width, height: frame.height), in: size)
        let picture: I420Frame
        if place.width == frame.width, place.height == frame.height {
            picture = frame
        } else {
            let shrinking = place.width < frame.width
            picture = try ColorConversion.scale(frame, width: place.width, height: place.height,
                                                filter: shrinking ? .box : .bilinear)
        }
        guard let image = segment?.image ?? plainImage?.image, let data = image.pointee.data else {
            throw MediaError.device("video window on \(display.name) has no image buffer")
        }
        let stride = Int(image.pointee.bytes_per_line)
        let bufferHeight = Int(image.pointee.height)
        guard place.x + place.width <= Int(image.pointee.width), place.y + place.height <= bufferHeight else {
            throw MediaError.device("video window image is smaller than the window")
        }
        if lastPlacement.map({ $0 != place }) ?? true {
            memset(data, 0, stride * bufferHeight)  // black bars (BGRX zero)
            lastPlacement = place
        }
        let origin = UnsafeMutableRawPointer(data) + place.y * stride + place.x * ColorConversion.bytesPerPixel
        try ColorConversion.i420ToBGRA(picture, into: origin, stride: stride)
        let width = UInt32(size.width), height = UInt32(size.height)
        try display.trappingErrors("video window", sync: true) {
            if method == .sharedMemory {
                _ = XShmPutImage(display.handle, window, gc, image, 0, 0, 0, 0, width, height, 0)
            } else {
                _ = XPutImage(display.handle, window, gc, image, 0, 0, 0, 0, width, height)
            }
        }
        framesDrawn += 1
    }

    /// A buffer of the window's size: a shared-memory segment when possible, else a plain image.
    private func allocateImage() throws {
        segment = nil
        plainImage = nil
        lastPlacement = nil
        let attributes = try display.attributes(of: window)
        if allowSharedMemory, display.offersSharedMemory,
           let shared = try? SharedMemoryImage(display: display, attributes: attributes) {
            try Self.checkFormat(shared.image)
            segment = shared
            method = .sharedMemory
            return
        }
        method = .putImage
        let stride = Int(attributes.width) * ColorConversion.bytesPerPixel
        guard let data = calloc(stride * Int(attributes.height), 1) else {
            throw MediaError.device("cannot allocate a \(attributes.width)x\(attributes.height) image")
        }
        guard let image = XCreateImage(display.handle, attributes.visual, UInt32(attributes.depth), ZPixmap, 0,
                                       data.assumingMemoryBound(to: CChar.self), UInt32(attributes.width),
                                       UInt32(attributes.height), 32, Int32(stride)) else {
            free(data)
            throw MediaError.device("cannot create an X image on \(display.name)")
        }
        let buffer = XImageBuffer(image)  // XDestroyImage frees `data` with it
        try Self.checkFormat(image)
        plainImage = buffer
    }

    /// The conversion writes B, G, R, X bytes: other pixel layouts would show wrong colours.
    private static func checkFormat(_ image: UnsafeMutablePointer<XImage>) throws {
        let x = image.pointee
        guard x.bits_per_pixel == 32, x.byte_order == LSBFirst, x.red_mask == 0xFF0000,
              x.green_mask == 0x00FF00, x.blue_mask == 0x0000FF else {
            throw MediaError.device("unsupported X pixel format (depth \(x.depth), \(x.bits_per_pixel) bits per pixel); Shroud needs 32-bit BGRX")
        }
    }
}
