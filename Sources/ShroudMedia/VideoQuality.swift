/// The picture sizes Shroud offers for screen sharing and recording, named by their height as
/// people do ("720p"), each with the VP8 bitrate it is tuned for (the PSNR tests in
/// ShroudMediaTests hold these bitrates to ≥ 35 dB on text, code and UI screens).
public enum VideoQuality: String, CaseIterable, Sendable {
    case p360 = "360p"
    case p720 = "720p"
    case p1080 = "1080p"

    public var height: Int {
        switch self {
        case .p360: return 360
        case .p720: return 720
        case .p1080: return 1080
        }
    }

    /// Target VP8 bitrate in bits per second at 30 fps.
    public var defaultBitrate: Int {
        switch self {
        case .p360: return 500_000
        case .p720: return 1_200_000
        case .p1080: return 2_500_000
        }
    }

    /// The output size for a source of `width`×`height`: scaled to this height keeping the aspect
    /// ratio, never enlarged, and rounded to even sizes (I420 chroma is subsampled by two).
    public func outputSize(sourceWidth width: Int, sourceHeight height: Int) -> PixelSize {
        guard height > self.height else { return PixelSize(width: width & ~1, height: height & ~1) }
        let scaledWidth = (width * self.height + height / 2) / height
        return PixelSize(width: max(2, scaledWidth & ~1), height: self.height)
    }
}

/// Turns captured BGRX screens into I420 pictures of one output size: libyuv conversion at the
/// capture size, then a box-filter scale when the output is smaller (box keeps text legible when
/// shrinking). The first stage of both recording and screen sharing.
public struct ScreenPictureConverter: Sendable {
    public let quality: VideoQuality

    public init(quality: VideoQuality) {
        self.quality = quality
    }

    public func picture(from frame: BorrowedScreenFrame) throws -> I420Frame {
        let target = quality.outputSize(sourceWidth: frame.width, sourceHeight: frame.height)
        // Odd capture sizes are cropped by one pixel so that conversion sees even dimensions.
        let evenWidth = frame.width & ~1, evenHeight = frame.height & ~1
        let full = try ColorConversion.bgraToI420(frame.pixels, width: evenWidth, height: evenHeight, stride: frame.stride)
        guard target.width != evenWidth || target.height != evenHeight else { return full }
        return try ColorConversion.scale(full, width: target.width, height: target.height, filter: .box)
    }
}
