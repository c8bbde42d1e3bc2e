import Foundation

/// One picture in planar YUV 4:2:0 (I420): a full-resolution luma plane and two chroma planes at
/// half resolution in each direction (rounded up for odd sizes). Planes are tightly packed: the
/// stride of each plane is its width. This is the one picture type of the media layer: capture
/// converts into it, VP8 encodes and decodes it, Y4M stores it, and the viewer converts out of it.
public struct I420Frame: Sendable, Equatable {
    /// Largest width or height accepted anywhere (files, decoders, conversions). VP8 itself stops at
    /// 16383; anything bigger in a file header is corrupt rather than a real picture.
    public static let maxDimension = 16_383

    public let width: Int
    public let height: Int
    public var y: [UInt8]
    public var u: [UInt8]
    public var v: [UInt8]

    public var chromaWidth: Int { (width + 1) / 2 }
    public var chromaHeight: Int { (height + 1) / 2 }

    /// Bytes of the three planes together.
    public var byteCount: Int { y.count + u.count + v.count }

    /// Plane sizes for a picture of this size: luma, then each chroma plane.
    public static func planeSizes(width: Int, height: Int) -> (luma: Int, chroma: Int) {
        (width * height, ((width + 1) / 2) * ((height + 1) / 2))
    }

    /// Checks a picture size before anything is allocated for it.
    public static func validate(width: Int, height: Int) throws {
        guard width > 0, height > 0 else {
            throw MediaError.codec("picture size \(width)x\(height) is empty")
        }
        guard width <= maxDimension, height <= maxDimension else {
            throw MediaError.codec("picture size \(width)x\(height) exceeds \(maxDimension) pixels per side")
        }
    }

    public init(width: Int, height: Int, y: [UInt8], u: [UInt8], v: [UInt8]) throws {
        try Self.validate(width: width, height: height)
        let sizes = Self.planeSizes(width: width, height: height)
        guard y.count == sizes.luma, u.count == sizes.chroma, v.count == sizes.chroma else {
            throw MediaError.codec("I420 planes for \(width)x\(height) must be \(sizes.luma)/\(sizes.chroma)/\(sizes.chroma) bytes, got \(y.count)/\(u.count)/\(v.count)")
        }
        self.width = width
        self.height = height
        self.y = y
        self.u = u
        self.v = v
    }

    /// A uniformly coloured picture (black by default: Y 16, U and V 128 in video range).
    public init(width: Int, height: Int, luma: UInt8 = 16, cb: UInt8 = 128, cr: UInt8 = 128) throws {
        try Self.validate(width: width, height: height)
        let sizes = Self.planeSizes(width: width, height: height)
        self.width = width
        self.height = height
        self.y = [UInt8](repeating: luma, count: sizes.luma)
        self.u = [UInt8](repeating: cb, count: sizes.chroma)
        self.v = [UInt8](repeating: cr, count: sizes.chroma)
    }

    /// Checks that the planes still have the sizes the dimensions call for. The planes are `var`
    /// so callers can edit pixels in place; every consumer that hands them to C calls this first,
    /// so a plane replaced by one of the wrong length is an error rather than an out-of-bounds read.
    public func checkPlanes() throws {
        let sizes = Self.planeSizes(width: width, height: height)
        guard y.count == sizes.luma, u.count == sizes.chroma, v.count == sizes.chroma else {
            throw MediaError.codec("I420 planes for \(width)x\(height) must be \(sizes.luma)/\(sizes.chroma)/\(sizes.chroma) bytes, got \(y.count)/\(u.count)/\(v.count)")
        }
    }

    /// The three planes one after the other, as Y4M and raw `yuv420p` store them.
    public var packedBytes: [UInt8] { y + u + v }

    /// Splits packed `yuv420p` bytes (Y, then U, then V) into a frame.
    public init(width: Int, height: Int, packed: ArraySlice<UInt8>) throws {
        try Self.validate(width: width, height: height)
        let sizes = Self.planeSizes(width: width, height: height)
        guard packed.count == sizes.luma + 2 * sizes.chroma else {
            throw MediaError.codec("packed I420 for \(width)x\(height) must be \(sizes.luma + 2 * sizes.chroma) bytes, got \(packed.count)")
        }
        let start = packed.startIndex
        try self.init(width: width, height: height,
                      y: Array(packed[start ..< start + sizes.luma]),
                      u: Array(packed[start + sizes.luma ..< start + sizes.luma + sizes.chroma]),
                      v: Array(packed[start + sizes.luma + sizes.chroma ..< start + sizes.luma + 2 * sizes.chroma]))
    }
}

/// Peak signal-to-noise ratio between a reference picture and a reconstruction, in dB — the usual
/// objective measure of video codec quality. Identical planes give `.infinity`.
public struct PictureQuality: Sendable, Equatable {
    /// Luma only: what the eye is most sensitive to, and what codec comparisons usually quote.
    public let lumaPSNR: Double
    /// All three planes weighted by their sample counts (the mean squared error over every byte).
    public let overallPSNR: Double

    public init(reference: I420Frame, reconstruction: I420Frame) throws {
        guard reference.width == reconstruction.width, reference.height == reconstruction.height else {
            throw MediaError.codec("cannot compare \(reference.width)x\(reference.height) with \(reconstruction.width)x\(reconstruction.height)")
        }
        try reference.checkPlanes()
        try reconstruction.checkPlanes()
        let lumaError = Self.squaredError(reference.y, reconstruction.y)
        let chromaError = Self.squaredError(reference.u, reconstruction.u) + Self.squaredError(reference.v, reconstruction.v)
        lumaPSNR = Self.psnr(squaredError: lumaError, samples: reference.y.count)
        overallPSNR = Self.psnr(squaredError: lumaError + chromaError, samples: reference.byteCount)
    }

    static func squaredError(_ a: [UInt8], _ b: [UInt8]) -> UInt64 {
        var total: UInt64 = 0
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                for i in 0 ..< pa.count {
                    let d = Int32(pa[i]) - Int32(pb[i])
                    total &+= UInt64(d * d)
                }
            }
        }
        return total
    }

    static func psnr(squaredError: UInt64, samples: Int) -> Double {
        guard squaredError > 0 else { return .infinity }
        let mse = Double(squaredError) / Double(samples)
        return 10 * log10(255 * 255 / mse)
    }
}
