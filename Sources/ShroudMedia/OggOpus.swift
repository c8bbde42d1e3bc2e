/// Ogg Opus files (RFC 7845 on the Ogg container of RFC 3533): what `voice join --output
/// FILE.opus` and `media record-audio` write, and what ffmpeg and every audio player open.
///
/// Ogg page (RFC 3533 §6), little-endian:
/// ```
///  0 "OggS"  4 version (0)  5 flags (1 continued, 2 first page, 4 last page)
///  6 granule position i64   14 stream serial u32   18 page sequence u32   22 CRC-32 u32
/// 26 segment count n        27 lacing values (n bytes)   27+n packet data
/// ```
/// A packet is split into lacing values of 255 and ends with a value below 255 (a packet of a
/// multiple of 255 bytes ends with a 0). The CRC is the unreflected CRC-32 with polynomial
/// 0x04C11DB7, initial value 0, over the whole page with the CRC field zeroed.
///
/// Opus mapping (RFC 7845 §3–5): page 0 holds only the identification header "OpusHead" (flag
/// "first page"), the comment header "OpusTags" starts on page 1 and finishes its page, audio
/// packets follow on fresh pages. A page's granule position counts the 48 kHz samples (per
/// channel) a decoder outputs up to the end of its last completed packet — pre-skip included, so
/// a player plays `granule − pre-skip` samples; the last page carries the
/// "last page" flag and may end before the last packet does (trimming the encoder's padding).
public enum OggOpus {
    static let capture: [UInt8] = Array("OggS".utf8)
    static let headMagic: [UInt8] = Array("OpusHead".utf8)
    static let tagsMagic: [UInt8] = Array("OpusTags".utf8)
    static let pageHeaderSize = 27
    /// Ogg allows at most 255 lacing values per page.
    public static let maxSegmentsPerPage = 255
    /// Audio held back before a page is written: the 1 s RFC 7845 §4 recommends as an upper bound
    /// on page duration, so seeking stays cheap and a crash loses little.
    public static let maxPageDurationSamples = OpusCodec.sampleRate
    /// Largest OpusTags packet read (vendor and comments); larger is treated as corrupt.
    public static let maxTagsBytes = 1 << 20
    /// Largest audio packet accepted: one Opus packet, no bigger than libopus ever writes.
    public static let maxPacketBytes = OpusCodec.maxPacketBytes

    enum Flag {
        static let continued: UInt8 = 0x01
        static let firstPage: UInt8 = 0x02
        static let lastPage: UInt8 = 0x04
    }

    /// CRC-32 of an Ogg page (polynomial 0x04C11DB7, not reflected, initial 0, no final xor).
    static func crc(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0
        for byte in bytes {
            crc = (crc << 8) ^ crcTable[Int(((crc >> 24) ^ UInt32(byte)) & 0xFF)]
        }
        return crc
    }

    private static let crcTable: [UInt32] = (0 ..< 256).map { index in
        var r = UInt32(index) << 24
        for _ in 0 ..< 8 { r = r & 0x8000_0000 != 0 ? (r << 1) ^ 0x04C1_1DB7 : r << 1 }
        return r
    }

    /// Builds one page around whole packets, each laced into 255-byte segments.
    static func page(packets: [[UInt8]], flags: UInt8, granule: Int64, serial: UInt32, sequence: UInt32) -> [UInt8] {
        var lacing: [UInt8] = []
        for packet in packets {
            lacing += [UInt8](repeating: 255, count: packet.count / 255)
            lacing.append(UInt8(packet.count % 255))
        }
        var page: [UInt8] = capture
        page.append(0)
        page.append(flags)
        page.appendLE(granule)
        page.appendLE(serial)
        page.appendLE(sequence)
        page.appendLE(UInt32(0))
        page.append(UInt8(lacing.count))
        page += lacing
        for packet in packets { page += packet }
        page.storeLE(crc(page), at: 22)
        return page
    }

    static func lacingValues(for packet: [UInt8]) -> Int { packet.count / 255 + 1 }
}

/// The identification header ("OpusHead", RFC 7845 §5.1) for channel mapping family 0.
public struct OpusHead: Sendable, Equatable {
    public var channels: Int
    /// Samples (at 48 kHz) to drop from the decoder output at the start: the encoder's delay.
    public var preSkip: Int
    /// Sample rate of the original input, informational only (playback is always 48 kHz).
    public var inputSampleRate: Int
    /// Gain in Q7.8 dB to apply on output.
    public var outputGain: Int16

    public init(channels: Int, preSkip: Int, inputSampleRate: Int = OpusCodec.sampleRate, outputGain: Int16 = 0) {
        self.channels = channels
        self.preSkip = preSkip
        self.inputSampleRate = inputSampleRate
        self.outputGain = outputGain
    }

    /// ```
    ///  0 "OpusHead"  8 version (1)  9 channels  10 pre-skip u16  12 input rate u32
    /// 16 output gain i16  18 mapping family (0)
    /// ```
    public init(parsing packet: [UInt8]) throws {
        var r = FileBytes(format: "Ogg Opus", bytes: packet)
        guard Array(try r.take(8, "OpusHead")) == OggOpus.headMagic else { throw r.error("first packet is not OpusHead") }
        let version = try r.u8("OpusHead version")
        // RFC 7845 §5.1: the major version (upper four bits) must be 0; minor versions are compatible.
        guard version >> 4 == 0, version != 0 else { throw r.error("OpusHead version \(version) is not supported") }
        channels = Int(try r.u8("OpusHead channels"))
        preSkip = Int(try r.u16("OpusHead pre-skip"))
        inputSampleRate = Int(try r.u32("OpusHead input rate"))
        outputGain = Int16(bitPattern: try r.u16("OpusHead gain"))
        let family = try r.u8("OpusHead mapping family")
        guard family == 0 else { throw r.error("channel mapping family \(family) is not supported (mono/stereo only)") }
        guard OpusCodec.channelRange.contains(channels) else { throw r.error("\(channels) channels is not 1 or 2") }
    }

    public func serialized() -> [UInt8] {
        var out = OggOpus.headMagic
        out.append(1)
        out.append(UInt8(channels))
        out.appendLE(UInt16(preSkip))
        out.appendLE(UInt32(inputSampleRate))
        out.appendLE(outputGain)
        out.append(0)
        return out
    }
}

/// Writes an Ogg Opus file from Opus packets (one logical stream, mono or stereo).
public final class OggOpusWriter {
    public let head: OpusHead
    private let serial: UInt32
    private let sink: ByteSink
    private var sequence: UInt32 = 0
    private var pending: [[UInt8]] = []
    private var pendingSegments = 0
    private var pendingSamples = 0
    /// Granule position after the last packet written: every sample the decoder outputs counts,
    /// including the pre-skip it will drop (RFC 7845 §4).
    private var granule: Int64
    private var lastPageGranule: Int64
    private var finished = false

    /// - Parameters:
    ///   - preSkip: the encoder's lookahead (`OpusEncoder.lookahead`).
    ///   - serialNumber: the Ogg stream serial; should be random (it is a parameter so that callers
    ///     choose the randomness and tests are repeatable).
    public convenience init(path: String, channels: Int, preSkip: Int, serialNumber: UInt32,
                            inputSampleRate: Int = OpusCodec.sampleRate, vendor: String = "Shroud") throws {
        try self.init(sink: try ByteSink(path: path), channels: channels, preSkip: preSkip, serialNumber: serialNumber,
                      inputSampleRate: inputSampleRate, vendor: vendor)
    }

    public convenience init(channels: Int, preSkip: Int, serialNumber: UInt32,
                            inputSampleRate: Int = OpusCodec.sampleRate, vendor: String = "Shroud") throws {
        try self.init(sink: ByteSink(), channels: channels, preSkip: preSkip, serialNumber: serialNumber,
                      inputSampleRate: inputSampleRate, vendor: vendor)
    }

    private init(sink: ByteSink, channels: Int, preSkip: Int, serialNumber: UInt32, inputSampleRate: Int, vendor: String) throws {
        guard OpusCodec.channelRange.contains(channels) else { throw MediaError.file("Ogg Opus: \(channels) channels is not 1 or 2") }
        guard (0 ... Int(UInt16.max)).contains(preSkip) else { throw MediaError.file("Ogg Opus: pre-skip \(preSkip) does not fit 16 bits") }
        guard (0 ... Int(UInt32.max)).contains(inputSampleRate) else { throw MediaError.file("Ogg Opus: input rate \(inputSampleRate) is invalid") }
        head = OpusHead(channels: channels, preSkip: preSkip, inputSampleRate: inputSampleRate)
        serial = serialNumber
        self.sink = sink
        granule = 0
        lastPageGranule = 0
        var tags = OggOpus.tagsMagic
        tags.appendLE(UInt32(vendor.utf8.count))
        tags += Array(vendor.utf8)
        tags.appendLE(UInt32(0))   // no user comments
        try emit([head.serialized()], flags: OggOpus.Flag.firstPage, granule: 0)
        try emit([tags], flags: 0, granule: 0)
    }

    public var bytes: [UInt8] { sink.memory }

    private func emit(_ packets: [[UInt8]], flags: UInt8, granule: Int64) throws {
        try sink.write(OggOpus.page(packets: packets, flags: flags, granule: granule, serial: serial, sequence: sequence))
        sequence &+= 1
        lastPageGranule = granule
    }

    /// Adds one Opus packet; its duration is read from its table-of-contents byte.
    public func write(_ packet: [UInt8]) throws {
        guard !finished else { throw MediaError.file("Ogg Opus: write after finish") }
        let samples: Int
        do { samples = try OpusCodec.samplesPerChannel(inPacket: packet) } catch {
            throw MediaError.file("Ogg Opus: \(error)")
        }
        if pendingSegments + OggOpus.lacingValues(for: packet) > OggOpus.maxSegmentsPerPage
            || pendingSamples + samples > OggOpus.maxPageDurationSamples {
            try flush(last: false)
        }
        pending.append(packet)
        pendingSegments += OggOpus.lacingValues(for: packet)
        pendingSamples += samples
        granule += Int64(samples)
    }

    private func flush(last: Bool, finalGranule: Int64? = nil) throws {
        guard !pending.isEmpty || last else { return }
        try emit(pending, flags: last ? OggOpus.Flag.lastPage : 0, granule: finalGranule ?? granule)
        pending = []
        pendingSegments = 0
        pendingSamples = 0
    }

    /// Writes the last page and closes the file.
    /// - Parameter sampleCount: samples per channel of the original audio; when given, the final
    ///   granule position ends the stream there, so players drop the encoder's padding in the last
    ///   frame and decode exactly the original length.
    public func finish(sampleCount: Int? = nil) throws {
        guard !finished else { return }
        var end = granule
        if let sampleCount {
            let requested = Int64(head.preSkip) + Int64(sampleCount)
            // End trimming may only shorten the last page's audio (RFC 7845 §4.5).
            guard requested <= granule, requested >= lastPageGranule else {
                throw MediaError.file("Ogg Opus: sample count \(sampleCount) does not fall within the last page")
            }
            end = requested
        }
        finished = true
        try flush(last: true, finalGranule: end)
        try sink.close()
    }
}

/// Reads a whole Ogg Opus file: checks every page's signature, CRC, serial and sequence number,
/// reassembles packets across pages, and parses OpusHead and OpusTags.
public struct OggOpusReader: Sendable {
    public let head: OpusHead
    public let vendor: String
    public let comments: [String]
    /// Audio packets in order.
    public let packets: [[UInt8]]
    /// Granule position of the last page (pre-skip included).
    public let finalGranule: Int64

    /// Samples per channel a player outputs: the decoded audio minus the pre-skip, cut at the final
    /// granule position.
    public var sampleCount: Int { max(0, Int(finalGranule) - head.preSkip) }

    public init(path: String) throws {
        try self.init(parsing: try readWholeFile(path, format: "Ogg Opus"))
    }

    public init(parsing bytes: [UInt8]) throws {
        var r = FileBytes(format: "Ogg Opus", bytes: bytes)
        var serial: UInt32?
        var expectedSequence: UInt32 = 0
        var packets: [[UInt8]] = []
        var partial: [UInt8] = []
        var lastGranule: Int64 = 0
        var sawLastPage = false
        while !r.isAtEnd {
            guard !sawLastPage else { throw r.error("data after the end-of-stream page") }
            let pageStart = r.offset
            guard Array(try r.take(4, "page header")) == OggOpus.capture else {
                throw r.error("missing OggS capture pattern at offset \(pageStart)")
            }
            let version = try r.u8("page header")
            guard version == 0 else { throw r.error("Ogg version \(version) is not supported") }
            let flags = try r.u8("page header")
            let granule = Int64(bitPattern: try r.u64("page header"))
            let pageSerial = try r.u32("page header")
            let sequence = try r.u32("page header")
            let storedCRC = try r.u32("page header")
            let segmentCount = Int(try r.u8("page header"))
            let lacing = Array(try r.take(segmentCount, "segment table"))
            let bodySize = lacing.reduce(0) { $0 + Int($1) }
            let body = Array(try r.take(bodySize, "page data"))

            var copy = Array(bytes[pageStart ..< r.offset])
            copy.storeLE(UInt32(0), at: 22)
            guard OggOpus.crc(copy) == storedCRC else { throw r.error("CRC mismatch on page \(sequence)") }
            if let serial {
                guard pageSerial == serial else { throw r.error("page from a second logical stream (serial \(pageSerial)); only one is supported") }
                guard flags & OggOpus.Flag.firstPage == 0 else { throw r.error("beginning-of-stream flag on page \(sequence)") }
            } else {
                guard flags & OggOpus.Flag.firstPage != 0 else { throw r.error("first page lacks the beginning-of-stream flag") }
                serial = pageSerial
            }
            guard sequence == expectedSequence else { throw r.error("page \(expectedSequence) is missing (found \(sequence))") }
            expectedSequence &+= 1
            if flags & OggOpus.Flag.continued != 0 {
                guard !partial.isEmpty else { throw r.error("continued page \(sequence) without a packet to continue") }
            } else if !partial.isEmpty {
                throw r.error("packet left unfinished before page \(sequence)")
            }
            var position = 0
            for value in lacing {
                partial += body[position ..< position + Int(value)]
                position += Int(value)
                guard partial.count <= OggOpus.maxTagsBytes else { throw r.error("packet larger than \(OggOpus.maxTagsBytes) bytes") }
                if value < 255 {
                    packets.append(partial)
                    partial = []
                }
            }
            if granule != -1 {
                guard granule >= lastGranule else { throw r.error("granule position goes backwards on page \(sequence)") }
                lastGranule = granule
            }
            if flags & OggOpus.Flag.lastPage != 0 { sawLastPage = true }
        }
        guard packets.count >= 2 else { throw r.error("truncated: missing OpusHead or OpusTags") }
        guard sawLastPage else { throw r.error("truncated: no end-of-stream page") }
        guard partial.isEmpty else { throw r.error("truncated: last packet unfinished") }

        head = try OpusHead(parsing: packets[0])
        var tags = FileBytes(format: "Ogg Opus", bytes: packets[1])
        guard Array(try tags.take(8, "OpusTags")) == OggOpus.tagsMagic else { throw tags.error("second packet is not OpusTags") }
        let vendorLength = Int(try tags.u32("OpusTags vendor length"))
        vendor = String(decoding: try tags.take(vendorLength, "OpusTags vendor"), as: UTF8.self)
        let commentCount = Int(try tags.u32("OpusTags comment count"))
        guard commentCount <= tags.remaining / 4 else { throw tags.error("OpusTags declares \(commentCount) comments in \(tags.remaining) bytes") }
        var comments: [String] = []
        for _ in 0 ..< commentCount {
            let length = Int(try tags.u32("OpusTags comment length"))
            comments.append(String(decoding: try tags.take(length, "OpusTags comment"), as: UTF8.self))
        }
        self.comments = comments
        let audio = Array(packets.dropFirst(2))
        for (index, packet) in audio.enumerated() {
            guard !packet.isEmpty, packet.count <= OggOpus.maxPacketBytes else {
                throw r.error("audio packet \(index) has \(packet.count) bytes, outside 1...\(OggOpus.maxPacketBytes)")
            }
        }
        self.packets = audio
        finalGranule = lastGranule
    }
}
