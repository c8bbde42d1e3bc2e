import ShroudMedia
import ShroudRelayCore
import ShroudTestSupport
import ShroudWire

/// Screen sharing (issue 6): the simulcast sender's CPU and bitrate, and the relay's layer
/// selector per packet.
///
///     shroud-bench screen [--frames N]
///
/// Sender: a private 1920×1080 Xvfb shows either the code fixture scrolled by 8 lines before every
/// frame (painting not timed) or the text fixture standing still. Each frame is captured (MIT-SHM),
/// converted once, scaled per layer and VP8-encoded per layer on one thread — exactly what
/// `SimulcastEncoder` does. CPU is this thread's CPU time (CLOCK_THREAD_CPUTIME_ID) per frame × 30,
/// as % of one core at 30 fps; the X server's own copy into shared memory is not in it. Bitrate is
/// the bytes of each layer per frame × 30 (the encoder's time base is 1/30 s).
func benchScreen(_ arguments: [String]) throws {
    var frames = 150
    if arguments.count == 2, arguments[0] == "--frames", let n = Int(arguments[1]), n > 0 { frames = n }
    else if !arguments.isEmpty { throw BenchError.failed("usage: shroud-bench screen [--frames N]") }

    let server = try XvfbServer(width: 1920, height: 1080)
    defer { server.stop() }
    let painter = try XPainter(server.displayName)
    let raw = { (name: String) in
        try Fixtures.run(["-v", "error", "-i", Fixtures.path("\(name).png"), "-f", "rawvideo", "-pix_fmt", "bgra", "-"])
    }
    let code = try raw("screen-code"), text = try raw("screen-text")
    let tall = code + code
    let rowBytes = 1920 * 4
    let screens: [(name: String, paint: (Int) -> Void)] = [
        ("scrolling code", { frame in
            let offset = (frame * 8) % 1080
            painter.put(Array(tall[offset * rowBytes ..< (offset + 1080) * rowBytes]), width: 1920, height: 1080, on: painter.root)
        }),
        ("static text", { frame in
            if frame == 0 { painter.put(text, width: 1920, height: 1080, on: painter.root) }
        }),
    ]
    let display = try X11Display(name: server.displayName)
    let capturer = try ScreenCapturer(display: display)

    var table = Table("share quality", "layers", "screen", "frames", "CPU ms/frame", "% of a core at 30 fps", "top layer kbit/s", "360p layer kbit/s")
    for top in [VideoQuality.p1080, .p720, .p360] {
        for screen in screens {
            let encoder = try SimulcastEncoder(top: top, streamID: { UInt32($0) })
            // One second of warm-up (the first keyframe and rate control settling) is not counted.
            for frame in 0 ..< 30 {
                screen.paint(frame)
                _ = try capturer.withNextFrame { try encoder.encode($0) }
            }
            let bytesBefore = encoder.layers.map(\.bytes)
            var cpu = 0.0
            for frame in 30 ..< 30 + frames {
                screen.paint(frame)
                let before = threadCPUSeconds()
                _ = try capturer.withNextFrame { try encoder.encode($0) }
                cpu += threadCPUSeconds() - before
            }
            let kbits = zip(encoder.layers.map(\.bytes), bytesBefore).map { Double($0 - $1) * 8 * 30 / Double(frames) / 1000 }
            let msPerFrame = cpu * 1000 / Double(frames)
            table.add(top.rawValue, encoder.layers.map(\.quality.rawValue).joined(separator: "+"), screen.name, "\(frames)",
                      fmt(msPerFrame, 2), fmt(msPerFrame * 30 / 10, 0) + " %",
                      top == .p360 ? "–" : fmt(kbits.last ?? 0, 0), fmt(kbits.first ?? 0, 0))
        }
    }
    table.print(title: "Simulcast sender, one thread: capture + convert + scale + VP8 per layer (1920×1080 screen)")
    try benchPipelineDelay(painter: painter, capturer: capturer, screen: code, frames: frames)
    try benchLayerSelector()
}

/// The screen-to-picture delay of the sender and viewer pipelines without the network: the screen
/// shows a `ScreenMarker` whose value is the paint number; after a random wait of 0–33 ms (the
/// change lands anywhere between two 30 fps capture ticks) the screen is captured, encoded by the
/// simulcast encoder at 1080p + 360p, decoded, and the marker read back from each layer. Delay =
/// time the marker was read − time the X server had painted it. SFrame, packetizing and the relay
/// are not in it (the wiring is not built yet).
private func benchPipelineDelay(painter: XPainter, capturer: ScreenCapturer, screen: [UInt8], frames: Int) throws {
    painter.put(screen, width: 1920, height: 1080, on: painter.root)
    let encoder = try SimulcastEncoder(top: .p1080, streamID: { UInt32($0) })
    let decoders = [try VP8Decoder(), try VP8Decoder()]
    let origin = ScreenMarker.origin(screenHeight: 1080)
    var random = SplitMix64(seed: 7)
    var delays: [[Double]] = [[], []]
    var unread = [0, 0]
    for index in 0 ..< frames + 30 {
        let marker = ScreenMarker.bgraImage(value: UInt32(index), screenHeight: 1080)
        painter.put(marker.pixels, width: marker.size.width, height: marker.size.height, on: painter.root, x: origin.x, y: origin.y)
        let painted = now()
        usleep(UInt32(random.next() % 33_000))
        let layerFrames = try capturer.withNextFrame { try encoder.encode($0) }
        for (slot, layerFrame) in layerFrames.enumerated() {
            guard let picture = try decoders[slot].decode(layerFrame.frame.data).first else { continue }
            let read = ScreenMarker.read(picture)
            let delay = (now() - painted) * 1000
            if read != UInt32(index) { unread[slot] += 1; continue }
            if index >= 30 { delays[slot].append(delay) }
        }
    }
    var table = Table("layer", "frames", "median ms", "90th percentile ms", "max ms", "markers not read")
    for (slot, name) in ["360p", "1080p"].enumerated() {
        let sorted = delays[slot].sorted()
        guard !sorted.isEmpty else { throw BenchError.failed("no marker was read on the \(name) layer") }
        table.add(name, "\(sorted.count)", fmt(sorted[sorted.count / 2], 1), fmt(sorted[sorted.count * 9 / 10], 1),
                  fmt(sorted.last ?? 0, 1), "\(unread[slot])")
    }
    table.print(title: "Screen to decoded picture without the network: marker painted → 0–33 ms wait → capture → simulcast encode → decode → marker read (1080p + 360p, one thread)")
}

/// The layer selector on the relay's per-packet path: `observe` once per packet, then `forwards`
/// for each viewer. Two layers, 30 frames/s each, a keyframe every 300 frames, viewers spread over
/// both layers.
private func benchLayerSelector() throws {
    var table = Table("viewers", "packets", "ns per packet (observe + all viewers)", "ns per viewer decision")
    for viewerCount in [1, 10, 50] {
        var selector = LayerSelector()
        var viewers: [LayerSelector.Viewer] = []
        for index in 0 ..< viewerCount {
            viewers.append(try selector.addViewer(maximumLayer: index % 2 == 0 ? 2 : 0, now: .zero))
        }
        // Pre-built headers: 8 fragments per 1080p frame, 2 per 360p frame.
        var headers: [MediaRoutingHeader] = []
        var sequences: [UInt32] = [0, 0]
        for frame in 0 ..< 600 {
            for (slot, layer) in [(0, MediaLayer(0)), (1, MediaLayer(2))] {
                let fragments = layer == 0 ? 2 : 8
                for fragment in 0 ..< fragments {
                    let packet = try MediaPacket(streamID: 10 + UInt32(layer), sequence: sequences[slot], frameNumber: UInt32(frame),
                                                 fragmentIndex: fragment, fragmentCount: fragments, isKeyframe: frame % 300 == 0,
                                                 layer: layer, payload: [1])
                    sequences[slot] += 1
                    headers.append(try MediaRoutingHeader(parsing: packet.serialized()))
                }
            }
        }
        var forwarded = 0
        let rounds = max(1, 2_000_000 / (headers.count * (viewerCount + 1)))
        let start = now()
        for round in 0 ..< rounds {
            for (index, header) in headers.enumerated() {
                let time = Duration.milliseconds((round * headers.count + index) / 10)
                selector.observe(header, now: time)
                for viewer in viewers where selector.forwards(header, to: viewer) { forwarded += 1 }
                while selector.pollOutput(now: time) != nil {}
            }
        }
        let elapsed = now() - start
        let packets = rounds * headers.count
        table.add("\(viewerCount)", "\(packets)", fmt(elapsed * 1e9 / Double(packets), 0),
                  fmt(elapsed * 1e9 / Double(packets * viewerCount), 1))
        if forwarded == 0 { throw BenchError.failed("the layer selector forwarded nothing") }
    }
    table.print(title: "Layer selector per media packet (relay hot path, one thread)")
}

private func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
