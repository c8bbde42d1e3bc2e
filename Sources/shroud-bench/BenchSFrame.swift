import ShroudCrypto

/// SFrame seal and open of 1200-byte frames (one core), against `openssl speed -evp aes-256-gcm`
/// on the same machine in the same run. The machine is shared, so the measurements are taken in
/// `rounds` interleaved rounds (SFrame, then openssl) and the best rate of each is reported.
/// Options: --seconds S (per measurement, default 3), --bytes N (payload, default 1200),
/// --rounds R (default 3).
func benchSFrame(_ arguments: [String]) throws {
    var seconds = 3.0
    var frameBytes = 1200
    var rounds = 3
    var i = 0
    while i < arguments.count {
        switch arguments[i] {
        case "--seconds": i += 1; seconds = Double(arguments[safe: i] ?? "") ?? seconds
        case "--bytes": i += 1; frameBytes = Int(arguments[safe: i] ?? "") ?? frameBytes
        case "--rounds": i += 1; rounds = max(1, Int(arguments[safe: i] ?? "") ?? rounds)
        default: throw BenchError.failed("unknown option \(arguments[i])")
        }
        i += 1
    }
    var random = SystemRandom()
    let payload = random.bytes(frameBytes)
    let baseKey = SecureBytes(randomCount: 32, using: &random)
    let suites: [SFrameCipherSuite] = [.aes256GCMSHA512, .aes128GCMSHA256]
    var bestSeal: [SFrameCipherSuite: Double] = [:]
    var bestOpen: [SFrameCipherSuite: Double] = [:]
    var bestReference = 0.0
    var sink = 0

    for _ in 0..<rounds {
        for suite in suites {
            let sender = try SFrameSender(suite: suite, keyID: 1, baseKey: baseKey)
            // Seal: one output allocation per frame, as in the media path.
            var frames = 0
            let sealStart = now()
            var elapsed = 0.0
            repeat {
                for _ in 0..<4096 { sink &+= try sender.seal(payload).count }
                frames += 4096
                elapsed = now() - sealStart
            } while elapsed < seconds
            bestSeal[suite] = max(bestSeal[suite] ?? 0, Double(frames) / elapsed)

            // Open: pre-sealed batches with distinct counters (a repeat would be a replay); a fresh
            // receiver per batch keeps the replay window honest, its key set-up is counted too.
            let batch = try (0..<8192).map { _ in try sender.seal(payload) }
            frames = 0
            let openStart = now()
            repeat {
                let receiver = SFrameReceiver(suite: suite)
                try receiver.addKey(keyID: 1, baseKey: baseKey)
                for frame in batch { sink &+= try receiver.open(frame).plaintext.count }
                frames += batch.count
                elapsed = now() - openStart
            } while elapsed < seconds
            bestOpen[suite] = max(bestOpen[suite] ?? 0, Double(frames) / elapsed)
        }
        // The reference: OpenSSL's own loop over the same cipher and size.
        bestReference = max(bestReference, try opensslSpeed(bytes: frameBytes, seconds: Int(seconds.rounded())))
    }
    if sink == 42 { print("") }  // keep the work observable

    var table = Table("suite", "operation", "frames/s", "GB/s (payload)", "µs/frame")
    for suite in suites {
        let name = suite == .aes256GCMSHA512 ? "AES_256_GCM_SHA512_128" : "AES_128_GCM_SHA256_128"
        for (op, rate) in [("seal", bestSeal[suite] ?? 0), ("open", bestOpen[suite] ?? 0)] {
            table.add(name, op, fmt(rate, 0), fmt(rate * Double(frameBytes) / 1e9, 2), fmt(1e6 / rate, 2))
        }
    }
    table.print(title: "SFrame, \(frameBytes)-byte frames, one core (best of \(rounds) rounds × \(fmt(seconds, 0)) s)")

    let referenceRate = bestReference / Double(frameBytes)
    let seal = bestSeal[.aes256GCMSHA512] ?? 0, open = bestOpen[.aes256GCMSHA512] ?? 0
    var comparison = Table("measurement", "GB/s", "frames/s", "ratio to openssl speed")
    comparison.add("openssl speed -evp aes-256-gcm -bytes \(frameBytes) -seconds \(Int(seconds.rounded()))",
                   fmt(bestReference / 1e9, 2), fmt(referenceRate, 0), "1.00")
    comparison.add("SFrame seal (AES_256_GCM_SHA512_128)", fmt(seal * Double(frameBytes) / 1e9, 2), fmt(seal, 0), fmt(seal / referenceRate, 2))
    comparison.add("SFrame open (AES_256_GCM_SHA512_128)", fmt(open * Double(frameBytes) / 1e9, 2), fmt(open, 0), fmt(open / referenceRate, 2))
    comparison.print(title: "SFrame against openssl speed, best of \(rounds) interleaved rounds (goal: ratio ≥ 0.8)")
}

/// Runs `openssl speed -evp aes-256-gcm -bytes N -seconds S` and returns bytes per second.
private func opensslSpeed(bytes: Int, seconds: Int) throws -> Double {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["openssl", "speed", "-evp", "aes-256-gcm", "-bytes", "\(bytes)", "-seconds", "\(seconds)"]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    // The result line: "AES-256-GCM    1749367.62k" (in 1000s of bytes per second).
    for line in output.split(separator: "\n") where line.uppercased().hasPrefix("AES-256-GCM") {
        if let last = line.split(separator: " ").last, last.hasSuffix("k"), let value = Double(last.dropLast()) {
            return value * 1000
        }
    }
    throw BenchError.failed("openssl speed gave no AES-256-GCM result (exit \(process.terminationStatus); "
                            + "is the openssl command installed? apt-get install openssl):\n\(output)")
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
