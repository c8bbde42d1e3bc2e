import CX11
import Glibc

/// What to capture: the whole screen (the root window) or one top-level window by its X id.
public enum CaptureSource: Equatable, Hashable, Sendable, CustomStringConvertible {
    case rootWindow
    case window(UInt)

    public var description: String {
        switch self {
        case .rootWindow: return "root window"
        case let .window(id): return "window 0x" + String(id, radix: 16)
        }
    }
}

/// How pixels leave the X server.
public enum CaptureMethod: String, Equatable, Sendable {
    /// `XShmGetImage` into one shared-memory segment reused for every frame (MIT-SHM).
    case sharedMemory = "shm"
    /// `XGetImage`: the pixels travel over the socket; about 20× slower at 1080p.
    case getImage = "getimage"
}

/// One captured frame, owning its pixels: rows of `width` BGRX pixels (blue first in memory),
/// `stride` bytes apart. The X byte is unspecified.
public struct ScreenFrame: Equatable, Sendable {
    public var width: Int
    public var height: Int
    public var stride: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, stride: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.stride = stride
        self.pixels = pixels
    }
}

/// A captured frame whose pixels still live in the capturer's buffer (the shared-memory segment
/// or the last `XGetImage` result). Valid only inside the closure that received it: the next
/// capture overwrites it.
public struct BorrowedScreenFrame {
    public let width: Int
    public let height: Int
    public let stride: Int
    public let pixels: UnsafeRawBufferPointer

    /// Copies the pixels into an owned frame.
    public func copy() -> ScreenFrame {
        ScreenFrame(width: width, height: height, stride: stride, pixels: Array(pixels))
    }
}

/// Captures the screen or one window of an `X11Display`, frame by frame.
///
/// With MIT-SHM (the default when the server offers it) every frame is `XShmGetImage` into one
/// segment allocated for the current size; without it, or with `allowSharedMemory: false`, every
/// frame is an `XGetImage`. The target's size is asked each frame, so a resized screen or window
/// gets a new segment and `sizeChanges` counts it; a window that was closed raises a
/// `MediaError`.
public final class ScreenCapturer {
    /// Largest width or height accepted (a 8K screen); larger targets are refused rather than
    /// allocating an unbounded segment.
    public static let maximumDimension = 8192

    public let display: X11Display
    public let source: CaptureSource
    /// The method actually used for capture.
    public private(set) var method: CaptureMethod
    /// The size of the last captured frame (before the first capture: the target's size at open).
    public private(set) var frameSize: PixelSize
    /// How many times the target's size changed between frames.
    public private(set) var sizeChanges = 0
    /// Frames captured so far.
    public private(set) var framesCaptured = 0

    private let drawable: Window
    private var segment: SharedMemoryImage?
    private var lastImage: XImageBuffer?

    /// Opens a capture of `source`. Uses MIT-SHM when the server offers it and
    /// `allowSharedMemory` is true (false forces the `XGetImage` path, e.g. for tests), and falls
    /// back to `XGetImage` when the shared-memory segment cannot be attached.
    public init(display: X11Display, source: CaptureSource = .rootWindow,
                allowSharedMemory: Bool = true) throws {
        self.display = display
        self.source = source
        switch source {
        case .rootWindow: drawable = display.rootWindow
        case let .window(id): drawable = Window(id)
        }
        let attributes = try display.attributes(of: drawable)
        let size = PixelSize(width: Int(attributes.width), height: Int(attributes.height))
        try Self.checkSize(size, of: source)
        frameSize = size
        method = .getImage
        if allowSharedMemory && display.offersSharedMemory {
            // A server in another IPC namespace (or a remote one) refuses the attach: fall back.
            if let segment = try? SharedMemoryImage(display: display, attributes: attributes) {
                self.segment = segment
                method = .sharedMemory
            }
        }
    }

    /// Refuses empty and oversized targets.
    public static func checkSize(_ size: PixelSize, of source: CaptureSource) throws {
        guard size.width > 0, size.height > 0 else {
            throw MediaError.device("\(source) has no pixels (\(size))")
        }
        guard size.width <= maximumDimension, size.height <= maximumDimension else {
            throw MediaError.device("\(source) is \(size), larger than \(maximumDimension) pixels on a side")
        }
    }

    /// Captures the next frame and lends its pixels to `body` without copying.
    public func withNextFrame<R>(_ body: (BorrowedScreenFrame) throws -> R) throws -> R {
        let attributes = try display.attributes(of: drawable)
        if case .window = source, attributes.map_state != IsViewable {
            throw MediaError.device("\(source) on \(display.name) is not viewable")
        }
        let size = PixelSize(width: Int(attributes.width), height: Int(attributes.height))
        if size != frameSize {
            try Self.checkSize(size, of: source)
            sizeChanges += 1
            frameSize = size
            if method == .sharedMemory {
                segment = nil  // detach the old segment before attaching the new one
                // No segment for the new size (out of shared memory): carry on with XGetImage.
                segment = try? SharedMemoryImage(display: display, attributes: attributes)
                if segment == nil { method = .getImage }
            }
        }
        let image: UnsafeMutablePointer<XImage>
        if method == .sharedMemory, let segment {
            try display.trappingErrors("\(source)", sync: false) {
                guard XShmGetImage(display.handle, drawable, segment.image, 0, 0, UInt.max) != 0 else {
                    throw MediaError.device("XShmGetImage of \(source) on \(display.name) failed")
                }
            }
            image = segment.image
        } else {
            lastImage = nil
            let fetched = try display.trappingErrors("\(source)", sync: false) {
                XGetImage(display.handle, drawable, 0, 0, UInt32(size.width), UInt32(size.height),
                          UInt.max, ZPixmap)
            }
            guard let fetched else {
                throw MediaError.device("XGetImage of \(source) on \(display.name) failed")
            }
            let buffer = XImageBuffer(fetched)
            lastImage = buffer
            image = buffer.image
        }
        let frame = try Self.borrow(image)
        framesCaptured += 1
        return try body(frame)
    }

    /// Captures the next frame into an owned copy.
    public func captureFrame() throws -> ScreenFrame {
        try withNextFrame { $0.copy() }
    }

    /// Views an `XImage` as BGRX rows, refusing formats Shroud does not convert.
    private static func borrow(_ image: UnsafeMutablePointer<XImage>) throws -> BorrowedScreenFrame {
        let x = image.pointee
        guard x.bits_per_pixel == 32, x.byte_order == LSBFirst, x.red_mask == 0xFF0000,
              x.green_mask == 0x00FF00, x.blue_mask == 0x0000FF, let data = x.data else {
            throw MediaError.device("unsupported X pixel format (depth \(x.depth), \(x.bits_per_pixel) bits per pixel); Shroud needs 32-bit BGRX")
        }
        let width = Int(x.width), height = Int(x.height), stride = Int(x.bytes_per_line)
        guard stride >= width * 4 else {
            throw MediaError.device("X image rows of \(stride) bytes are shorter than \(width) pixels")
        }
        return BorrowedScreenFrame(width: width, height: height, stride: stride,
                                   pixels: UnsafeRawBufferPointer(start: data, count: stride * height))
    }
}

/// One System V shared-memory segment attached to the X server, and the `XImage` that describes
/// it. Detached, destroyed and unmapped in `deinit`.
final class SharedMemoryImage {
    let display: X11Display
    let image: UnsafeMutablePointer<XImage>
    private let info: UnsafeMutablePointer<XShmSegmentInfo>

    init(display: X11Display, attributes: XWindowAttributes) throws {
        self.display = display
        let info = UnsafeMutablePointer<XShmSegmentInfo>.allocate(capacity: 1)
        info.initialize(to: XShmSegmentInfo())
        guard let image = XShmCreateImage(display.handle, attributes.visual, UInt32(attributes.depth),
                                          ZPixmap, nil, info, UInt32(attributes.width),
                                          UInt32(attributes.height)) else {
            info.deallocate()
            throw MediaError.device("cannot create a shared-memory image on \(display.name)")
        }
        let bytes = Int(image.pointee.bytes_per_line) * Int(image.pointee.height)
        let id = shmget(IPC_PRIVATE, bytes, IPC_CREAT | 0o600)
        guard id >= 0, let address = shroud_shmat(id) else {
            if id >= 0 { shmctl(id, IPC_RMID, nil) }
            _ = shroud_x_destroy_image(image)
            info.deallocate()
            throw MediaError.device("cannot allocate \(bytes) bytes of shared memory: \(String(cString: strerror(errno)))")
        }
        info.pointee.shmid = id
        info.pointee.shmaddr = address.assumingMemoryBound(to: CChar.self)
        info.pointee.readOnly = 0
        image.pointee.data = address.assumingMemoryBound(to: CChar.self)
        let attached = (try? display.trappingErrors("shared memory", sync: true) {
            XShmAttach(display.handle, info) != 0
        }) ?? false
        // Marked for removal now: the kernel frees it when both sides have detached, even if this
        // process dies.
        shmctl(id, IPC_RMID, nil)
        guard attached else {
            image.pointee.data = nil
            _ = shroud_x_destroy_image(image)
            shmdt(address)
            info.deallocate()
            throw MediaError.device("X server \(display.name) refused the shared-memory segment")
        }
        self.image = image
        self.info = info
    }

    deinit {
        XShmDetach(display.handle, info)
        XSync(display.handle, 0)
        _ = display.takeError()
        let address = image.pointee.data
        image.pointee.data = nil  // the segment is not malloc'ed: XDestroyImage must not free it
        _ = shroud_x_destroy_image(image)
        if let address { shmdt(address) }
        info.deallocate()
    }
}

/// An `XImage` returned by `XGetImage`, destroyed in `deinit`.
final class XImageBuffer {
    let image: UnsafeMutablePointer<XImage>
    init(_ image: UnsafeMutablePointer<XImage>) { self.image = image }
    deinit { _ = shroud_x_destroy_image(image) }
}
