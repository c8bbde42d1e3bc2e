import CYUV
import Foundation

/// Colour conversion and scaling through libyuv.
///
/// Pixel naming: X11 hands out 32-bpp pixels stored little-endian as the bytes B, G, R, X in
/// memory. libyuv names formats by the 32-bit word read little-endian, so it calls that layout
/// "ARGB" — `ARGBToI420` is the right call for X11 captures, and `I420ToARGB` produces the layout an
/// X11 window expects back. This file uses the memory order (BGRA) in its public names.
public enum ColorConversion {
    /// Bytes per BGRA/BGRX pixel.
    public static let bytesPerPixel = 4

    /// Converts 32-bpp BGRA or BGRX pixels (the X byte is ignored) into an I420 frame using
    /// BT.601 limited range, which is what VP8 decoders assume.
    /// - Parameter stride: bytes from one row to the next (at least `width * 4`; X11 may pad rows).
    public static func bgraToI420(_ pixels: UnsafeRawBufferPointer, width: Int, height: Int, stride: Int) throws -> I420Frame {
        try I420Frame.validate(width: width, height: height)
        guard stride >= width * bytesPerPixel else {
            throw MediaError.codec("BGRA stride \(stride) is shorter than a row of \(width) pixels")
        }
        let needed = stride * (height - 1) + width * bytesPerPixel
        guard pixels.count >= needed, let base = pixels.baseAddress else {
            throw MediaError.codec("BGRA buffer of \(pixels.count) bytes is too small for \(width)x\(height) at stride \(stride) (needs \(needed))")
        }
        var frame = try I420Frame(width: width, height: height)
        let chromaWidth = frame.chromaWidth
        let result = frame.y.withUnsafeMutableBufferPointer { y in
            frame.u.withUnsafeMutableBufferPointer { u in
                frame.v.withUnsafeMutableBufferPointer { v in
                    ARGBToI420(base.assumingMemoryBound(to: UInt8.self), Int32(stride),
                               y.baseAddress, Int32(width), u.baseAddress, Int32(chromaWidth),
                               v.baseAddress, Int32(chromaWidth), Int32(width), Int32(height))
                }
            }
        }
        guard result == 0 else { throw MediaError.codec("libyuv ARGBToI420 failed (\(result))") }
        return frame
    }

    /// Array form of `bgraToI420(_:width:height:stride:)`; `stride` defaults to tightly packed rows.
    public static func bgraToI420(_ pixels: [UInt8], width: Int, height: Int, stride: Int? = nil) throws -> I420Frame {
        try pixels.withUnsafeBytes { try bgraToI420($0, width: width, height: height, stride: stride ?? width * bytesPerPixel) }
    }

    /// Converts an I420 frame into tightly packed 32-bpp BGRA (alpha 255), ready for an X11 image.
    public static func i420ToBGRA(_ frame: I420Frame) throws -> [UInt8] {
        try frame.checkPlanes()
        var out = [UInt8](repeating: 0, count: frame.width * frame.height * bytesPerPixel)
        let result = frame.y.withUnsafeBufferPointer { y in
            frame.u.withUnsafeBufferPointer { u in
                frame.v.withUnsafeBufferPointer { v in
                    out.withUnsafeMutableBufferPointer { dst in
                        I420ToARGB(y.baseAddress, Int32(frame.width), u.baseAddress, Int32(frame.chromaWidth),
                                   v.baseAddress, Int32(frame.chromaWidth), dst.baseAddress,
                                   Int32(frame.width * bytesPerPixel), Int32(frame.width), Int32(frame.height))
                    }
                }
            }
        }
        guard result == 0 else { throw MediaError.codec("libyuv I420ToARGB failed (\(result))") }
        return out
    }

    /// Converts an I420 frame into 32-bpp BGRA rows written at `destination`, `stride` bytes apart
    /// (an X image's buffer). The caller guarantees `stride × (height − 1) + width × 4` bytes.
    public static func i420ToBGRA(_ frame: I420Frame, into destination: UnsafeMutableRawPointer, stride: Int) throws {
        try frame.checkPlanes()
        guard stride >= frame.width * bytesPerPixel else {
            throw MediaError.codec("BGRA stride \(stride) is shorter than \(frame.width) pixels")
        }
        let result = frame.y.withUnsafeBufferPointer { y in
            frame.u.withUnsafeBufferPointer { u in
                frame.v.withUnsafeBufferPointer { v in
                    I420ToARGB(y.baseAddress, Int32(frame.width), u.baseAddress, Int32(frame.chromaWidth),
                               v.baseAddress, Int32(frame.chromaWidth), destination.assumingMemoryBound(to: UInt8.self),
                               Int32(stride), Int32(frame.width), Int32(frame.height))
                }
            }
        }
        guard result == 0 else { throw MediaError.codec("libyuv I420ToARGB failed (\(result))") }
    }

    /// How `scale` filters. Box averages every source pixel under a destination pixel, which keeps
    /// thin text strokes visible when shrinking a screen; bilinear is faster and fine for enlarging.
    public enum ScaleFilter: Sendable {
        case nearest, bilinear, box

        var libyuv: FilterMode {
            switch self {
            case .nearest: return kFilterNone
            case .bilinear: return kFilterBilinear
            case .box: return kFilterBox
            }
        }
    }

    /// Scales an I420 frame to another size (for example 1920x1080 to 640x360 for a low layer).
    public static func scale(_ frame: I420Frame, width: Int, height: Int, filter: ScaleFilter = .box) throws -> I420Frame {
        try frame.checkPlanes()
        var out = try I420Frame(width: width, height: height)
        if width == frame.width, height == frame.height { return frame }
        let outChroma = out.chromaWidth
        let result = frame.y.withUnsafeBufferPointer { sy in
            frame.u.withUnsafeBufferPointer { su in
                frame.v.withUnsafeBufferPointer { sv in
                    out.y.withUnsafeMutableBufferPointer { dy in
                        out.u.withUnsafeMutableBufferPointer { du in
                            out.v.withUnsafeMutableBufferPointer { dv in
                                I420Scale(sy.baseAddress, Int32(frame.width), su.baseAddress, Int32(frame.chromaWidth),
                                          sv.baseAddress, Int32(frame.chromaWidth), Int32(frame.width), Int32(frame.height),
                                          dy.baseAddress, Int32(width), du.baseAddress, Int32(outChroma),
                                          dv.baseAddress, Int32(outChroma), Int32(width), Int32(height), filter.libyuv)
                            }
                        }
                    }
                }
            }
        }
        guard result == 0 else { throw MediaError.codec("libyuv I420Scale failed (\(result))") }
        return out
    }
}
