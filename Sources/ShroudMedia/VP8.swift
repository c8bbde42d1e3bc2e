import CVPX

/// One compressed video frame as it leaves the encoder or comes out of an IVF file.
public struct EncodedVideoFrame: Sendable, Equatable {
    public var data: [UInt8]
    public var isKeyframe: Bool
    /// Presentation time in units of the stream's time base (1/fps for Shroud's encoder).
    public var pts: Int64

    public init(data: [UInt8], isKeyframe: Bool, pts: Int64) {
        self.data = data
        self.isKeyframe = isKeyframe
        self.pts = pts
    }

    /// Whether a VP8 frame is a keyframe, read from the first bit of its frame tag (RFC 6386
    /// §9.1: bit 0 clear means key frame). Lets a reader of IVF files find keyframes.
    public static func isVP8Keyframe(_ data: [UInt8]) -> Bool {
        guard let first = data.first else { return false }
        return first & 0x01 == 0
    }
}

enum VPX {
    static func describe(_ err: vpx_codec_err_t, _ ctx: UnsafeMutablePointer<vpx_codec_ctx_t>?) -> String {
        var text = vpx_codec_err_to_string(err).map { String(cString: $0) } ?? "error \(err.rawValue)"
        if let ctx, let detail = vpx_codec_error_detail(ctx) { text += " (\(String(cString: detail)))" }
        return text
    }
}

/// A real-time VP8 encoder (one libvpx context, destroyed in deinit), configured for screen
/// sharing: constant bitrate, no look-ahead, one frame in → its packet out, keyframes on demand.
public final class VP8Encoder {
    /// Bitrates accepted, in bits per second (libvpx takes whole kbit/s).
    public static let bitrateRange = 50_000 ... 50_000_000
    public static let fpsRange = 1 ... 120
    public static let threadRange = 1 ... 16
    /// libvpx's VP8 speed range: negative values fix the speed at |n|; positive values let libvpx
    /// adapt the speed to the time left in the frame interval (so output depends on machine load).
    public static let cpuUsedRange = -16 ... 16

    public let width: Int
    public let height: Int
    public let fps: Int
    public private(set) var bitrate: Int
    private let context: UnsafeMutablePointer<vpx_codec_ctx_t>
    private var config = vpx_codec_enc_cfg_t()
    private var nextPTS: Int64 = 0

    /// - Parameters:
    ///   - bitrate: target in bits per second (CBR).
    ///   - cpuUsed: speed/quality trade, see `cpuUsedRange`; the default −6 (fixed speed 6, WebRTC's
    ///     desktop setting) keeps a scrolling 1080p screen near 43 dB at about 80 fps on one core;
    ///     faster speeds gain little time and lose 5 dB or more (docs/PERFORMANCE.md).
    ///   - screenContent: enables libvpx's screen-content mode and tunes the loop filter and
    ///     denoiser off, so text edges stay sharp instead of being smoothed as noise.
    ///   - keyframeInterval: maximum frames between automatic keyframes (new viewers also get one on
    ///     demand through `forceKeyframe`).
    public init(width: Int, height: Int, bitrate: Int, fps: Int = 30, threads: Int = 1,
                cpuUsed: Int = -6, screenContent: Bool = true, keyframeInterval: Int = 300,
                allowFrameDrops: Bool = false) throws {
        try I420Frame.validate(width: width, height: height)
        guard Self.bitrateRange.contains(bitrate) else {
            throw MediaError.codec("VP8 bitrate \(bitrate) is outside \(Self.bitrateRange)")
        }
        guard Self.fpsRange.contains(fps) else { throw MediaError.codec("VP8 fps \(fps) is outside \(Self.fpsRange)") }
        guard Self.threadRange.contains(threads) else {
            throw MediaError.codec("VP8 threads \(threads) is outside \(Self.threadRange)")
        }
        guard Self.cpuUsedRange.contains(cpuUsed) else {
            throw MediaError.codec("VP8 cpu-used \(cpuUsed) is outside \(Self.cpuUsedRange)")
        }
        guard keyframeInterval >= 1 else { throw MediaError.codec("VP8 keyframe interval must be at least 1") }
        self.width = width
        self.height = height
        self.fps = fps
        self.bitrate = bitrate

        let err = shroud_vpx_enc_config_default_vp8(&config)
        guard err == VPX_CODEC_OK else { throw MediaError.codec("VP8 default config failed: \(VPX.describe(err, nil))") }
        config.g_w = UInt32(width)
        config.g_h = UInt32(height)
        config.g_timebase = vpx_rational(num: 1, den: Int32(fps))
        config.g_threads = UInt32(threads)
        config.g_lag_in_frames = 0                   // real time: never hold frames back
        config.g_error_resilient = UInt32(VPX_ERROR_RESILIENT_DEFAULT)  // decodable after a loss
        config.rc_end_usage = VPX_CBR
        config.rc_target_bitrate = UInt32(bitrate / 1000)
        // A low minimum quantizer lets a still screen converge to near-lossless text; the maximum
        // keeps a scrolled or switched screen readable while the bitrate catches up.
        config.rc_min_quantizer = 2
        config.rc_max_quantizer = 52
        config.rc_undershoot_pct = 100
        config.rc_overshoot_pct = 15
        config.rc_buf_initial_sz = 500
        config.rc_buf_optimal_sz = 600
        config.rc_buf_sz = 1000
        config.rc_dropframe_thresh = allowFrameDrops ? 30 : 0
        config.kf_mode = VPX_KF_AUTO
        config.kf_min_dist = 0
        config.kf_max_dist = UInt32(keyframeInterval)

        context = .allocate(capacity: 1)
        context.initialize(to: vpx_codec_ctx_t())
        let initErr = shroud_vpx_enc_init_vp8(context, &config, 0)
        guard initErr == VPX_CODEC_OK else {
            let reason = VPX.describe(initErr, context)
            context.deallocate()
            throw MediaError.codec("VP8 encoder init failed: \(reason)")
        }
        do {
            try control(shroud_vpx_set_cpuused(context, Int32(cpuUsed)), "cpu-used")
            try control(shroud_vpx_set_noise_sensitivity(context, screenContent ? 0 : 1), "noise sensitivity")
            // Blocks that barely change are skipped (the cursor moves, the rest of the screen doesn't).
            try control(shroud_vpx_set_static_threshold(context, screenContent ? 1 : 0), "static threshold")
            try control(shroud_vpx_set_screen_content_mode(context, screenContent ? 1 : 0), "screen content mode")
            // Sharpness lowers loop-filter strength on edges: text stays crisp.
            try control(shroud_vpx_set_sharpness(context, screenContent ? 5 : 0), "sharpness")
            // Keyframes may take up to 3 frames' worth of budget, so a keyframe of a text-heavy screen
            // is readable without a long stall (the value WebRTC derives from a 600 ms buffer).
            try control(shroud_vpx_set_max_intra_bitrate_pct(context, 300), "max intra bitrate")
            if threads > 1 {
                // Token partitions let the decoder (and the encoder's packer) use several threads.
                try control(shroud_vpx_set_token_partitions(context, Int32(min(3, threads / 2))), "token partitions")
            }
        } catch {
            vpx_codec_destroy(context)
            context.deallocate()
            throw error
        }
    }

    deinit {
        vpx_codec_destroy(context)
        context.deallocate()
    }

    private func control(_ err: vpx_codec_err_t, _ what: String) throws {
        guard err == VPX_CODEC_OK else { throw MediaError.codec("VP8 \(what) failed: \(VPX.describe(err, context))") }
    }

    /// Changes the target bitrate between frames (congestion control, layer changes).
    public func setBitrate(_ bitrate: Int) throws {
        guard Self.bitrateRange.contains(bitrate) else {
            throw MediaError.codec("VP8 bitrate \(bitrate) is outside \(Self.bitrateRange)")
        }
        config.rc_target_bitrate = UInt32(bitrate / 1000)
        try control(vpx_codec_enc_config_set(context, &config), "set bitrate")
        self.bitrate = bitrate
    }

    /// Encodes one frame. Usually returns one packet; none when rate control drops the frame
    /// (only with `allowFrameDrops`).
    /// - Parameter pts: presentation time in 1/fps units; by default one more than the previous
    ///   frame. A capture loop that skipped frames passes its own, which must keep increasing.
    public func encode(_ frame: I420Frame, forceKeyframe: Bool = false, pts explicitPTS: Int64? = nil) throws -> [EncodedVideoFrame] {
        guard frame.width == width, frame.height == height else {
            throw MediaError.codec("VP8 encoder is \(width)x\(height), frame is \(frame.width)x\(frame.height)")
        }
        try frame.checkPlanes()
        let pts = explicitPTS ?? nextPTS
        guard pts >= nextPTS else {
            throw MediaError.codec("VP8 pts \(pts) is not after the previous frame's \(nextPTS - 1)")
        }
        nextPTS = pts + 1
        let flags: vpx_enc_frame_flags_t = forceKeyframe ? vpx_enc_frame_flags_t(VPX_EFLAG_FORCE_KF) : 0
        var image = vpx_image_t()
        let err: vpx_codec_err_t = frame.y.withUnsafeBufferPointer { y in
            frame.u.withUnsafeBufferPointer { u in
                frame.v.withUnsafeBufferPointer { v in
                    // Wrap the three separate planes without copying: vpx_img_wrap sets up the
                    // format fields, then the plane pointers and strides are pointed at our arrays.
                    guard vpx_img_wrap(&image, VPX_IMG_FMT_I420, UInt32(width), UInt32(height), 1,
                                       UnsafeMutablePointer(mutating: y.baseAddress)) != nil else {
                        return VPX_CODEC_MEM_ERROR
                    }
                    image.planes.0 = UnsafeMutablePointer(mutating: y.baseAddress)
                    image.planes.1 = UnsafeMutablePointer(mutating: u.baseAddress)
                    image.planes.2 = UnsafeMutablePointer(mutating: v.baseAddress)
                    image.stride.0 = Int32(frame.width)
                    image.stride.1 = Int32(frame.chromaWidth)
                    image.stride.2 = Int32(frame.chromaWidth)
                    return vpx_codec_encode(context, &image, pts, 1, flags, UInt(VPX_DL_REALTIME))
                }
            }
        }
        try control(err, "encode")
        return drain()
    }

    private func drain() -> [EncodedVideoFrame] {
        var out: [EncodedVideoFrame] = []
        var iterator: vpx_codec_iter_t? = nil
        while let packet = vpx_codec_get_cx_data(context, &iterator) {
            guard packet.pointee.kind == VPX_CODEC_CX_FRAME_PKT else { continue }
            let frame = packet.pointee.data.frame
            guard let buf = frame.buf else { continue }
            let bytes = Array(UnsafeRawBufferPointer(start: buf, count: frame.sz))
            out.append(EncodedVideoFrame(data: bytes, isKeyframe: frame.flags & UInt32(VPX_FRAME_IS_KEY) != 0, pts: frame.pts))
        }
        return out
    }
}

/// A VP8 decoder (one libvpx context, destroyed in deinit). Corrupt input is an error, never a crash.
public final class VP8Decoder {
    private let context: UnsafeMutablePointer<vpx_codec_ctx_t>

    public init(threads: Int = 1) throws {
        guard VP8Encoder.threadRange.contains(threads) else {
            throw MediaError.codec("VP8 threads \(threads) is outside \(VP8Encoder.threadRange)")
        }
        var config = vpx_codec_dec_cfg_t(threads: UInt32(threads), w: 0, h: 0)
        context = .allocate(capacity: 1)
        context.initialize(to: vpx_codec_ctx_t())
        let err = shroud_vpx_dec_init_vp8(context, &config, 0)
        guard err == VPX_CODEC_OK else {
            let reason = VPX.describe(err, context)
            context.deallocate()
            throw MediaError.codec("VP8 decoder init failed: \(reason)")
        }
    }

    deinit {
        vpx_codec_destroy(context)
        context.deallocate()
    }

    /// Decodes one compressed frame; returns the picture it completes (normally exactly one).
    public func decode(_ data: [UInt8]) throws -> [I420Frame] {
        guard !data.isEmpty else { throw MediaError.codec("VP8 frame is empty") }
        let err = data.withUnsafeBufferPointer { vpx_codec_decode(context, $0.baseAddress, UInt32($0.count), nil, 0) }
        guard err == VPX_CODEC_OK else { throw MediaError.codec("VP8 decode failed: \(VPX.describe(err, context))") }
        var frames: [I420Frame] = []
        var iterator: vpx_codec_iter_t? = nil
        while let image = vpx_codec_get_frame(context, &iterator) {
            frames.append(try Self.copy(image.pointee))
        }
        return frames
    }

    private static func copy(_ image: vpx_image_t) throws -> I420Frame {
        guard image.fmt == VPX_IMG_FMT_I420 else { throw MediaError.codec("VP8 decoder produced format \(image.fmt.rawValue), not I420") }
        let width = Int(image.d_w), height = Int(image.d_h)
        var frame = try I420Frame(width: width, height: height)
        guard let y = image.planes.0, let u = image.planes.1, let v = image.planes.2 else {
            throw MediaError.codec("VP8 decoder returned an image without planes")
        }
        copyPlane(from: y, stride: Int(image.stride.0), width: width, height: height, into: &frame.y)
        copyPlane(from: u, stride: Int(image.stride.1), width: frame.chromaWidth, height: frame.chromaHeight, into: &frame.u)
        copyPlane(from: v, stride: Int(image.stride.2), width: frame.chromaWidth, height: frame.chromaHeight, into: &frame.v)
        return frame
    }

    private static func copyPlane(from source: UnsafeMutablePointer<UInt8>, stride: Int, width: Int, height: Int, into plane: inout [UInt8]) {
        plane.withUnsafeMutableBufferPointer { dst in
            guard let base = dst.baseAddress else { return }
            for row in 0 ..< height {
                (base + row * width).update(from: source + row * stride, count: width)
            }
        }
    }
}
