import ShroudCrypto

/// Argon2id unlock time of a keystore record with the parameters new records use
/// (`Argon2idParameters.recommended`), plus neighbouring settings for context.
/// Options: --runs N (default 5).
func benchKeystore(_ arguments: [String]) throws {
    var runs = 5
    if arguments.first == "--runs", let n = Int(arguments[safe: 1] ?? ""), n > 0 { runs = n }
    var random = SystemRandom()
    let secret = SecureBytes(randomCount: 32, using: &random)
    let candidates: [(String, Argon2idParameters)] = [
        ("recommended (used)", .recommended),
        ("ops 2, 64 MiB", Argon2idParameters(opsLimit: 2, memLimit: 64 << 20)),
        ("ops 3, 128 MiB", Argon2idParameters(opsLimit: 3, memLimit: 128 << 20)),
        ("ops 4, 256 MiB", Argon2idParameters(opsLimit: 4, memLimit: 256 << 20)),
    ]
    var table = Table("parameters", "opslimit", "memlimit", "unlock min (s)", "unlock median (s)", "unlock max (s)")
    for (name, parameters) in candidates {
        let record = try Keystore.seal(secret: secret, passphrase: "benchmark passphrase", parameters: parameters, random: &random)
        let bytes = record.serialized()
        var times: [Double] = []
        for _ in 0..<runs {
            let start = now()
            let opened = try Keystore.open(bytes: bytes, passphrase: "benchmark passphrase")
            times.append(now() - start)
            guard opened.bytes == secret.bytes else { throw BenchError.failed("keystore round trip failed") }
        }
        times.sort()
        table.add(name, "\(parameters.opsLimit)", "\(parameters.memLimit >> 20) MiB",
                  fmt(times[0], 3), fmt(times[times.count / 2], 3), fmt(times[times.count - 1], 3))
    }
    table.print(title: "Keystore unlock (Argon2id via libsodium crypto_pwhash, ARGON2ID13), \(runs) runs each")
}
