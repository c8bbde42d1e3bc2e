import Testing
@testable import ShroudCrypto

@Suite struct KeystoreTests {
    static let secretBytes: [UInt8] = Array("correct horse battery staple entropy!".utf8)

    static func sealed(_ passphrase: String = "hunter2 but longer", seed: UInt64 = 1) throws -> SealedRecord {
        var random = SeededRandom(seed: seed)
        return try Keystore.seal(secret: SecureBytes(copying: secretBytes), passphrase: passphrase,
                                 parameters: .testOnly, random: &random)
    }

    @Test func roundTripThroughBytes() throws {
        let record = try Self.sealed()
        let bytes = record.serialized()
        #expect(try SealedRecord(parsing: bytes) == record)
        #expect(try Keystore.open(bytes: bytes, passphrase: "hunter2 but longer").bytes == Self.secretBytes)
        #expect(bytes.count == SealedRecord.headerByteCount + Self.secretBytes.count + 16 + 8)
    }

    @Test func emptyPassphraseAndEmptySecretWork() throws {
        var random = SeededRandom(seed: 2)
        let record = try Keystore.seal(secret: SecureBytes(count: 0), passphrase: "", parameters: .testOnly, random: &random)
        #expect(try Keystore.open(record: record, passphrase: "").count == 0)
        #expect(throws: KeystoreError.wrongPassphrase) { try Keystore.open(record: record, passphrase: " ") }
    }

    @Test func passphraseIsNormalized() throws {
        var random = SeededRandom(seed: 6)
        let record = try Keystore.seal(secret: SecureBytes(copying: [1]), passphrase: "caf\u{E9}", parameters: .testOnly, random: &random)
        #expect(try Keystore.open(record: record, passphrase: "cafe\u{301}").bytes == [1])
        #expect(throws: KeystoreError.wrongPassphrase) { try Keystore.open(record: record, passphrase: "cafe") }
    }

    @Test func sealedBytesDoNotContainTheSecret() throws {
        let bytes = try Self.sealed().serialized()
        // No 8-byte window of the secret appears anywhere in the record.
        for start in 0...(Self.secretBytes.count - 8) {
            let window = Array(Self.secretBytes[start..<start + 8])
            let found = (0...(bytes.count - 8)).contains { Array(bytes[$0..<$0 + 8]) == window }
            #expect(!found)
        }
    }

    @Test func freshSaltAndNonceEveryTime() throws {
        let a = try Self.sealed(seed: 1), b = try Self.sealed(seed: 2)
        #expect(a.salt != b.salt && a.nonce != b.nonce && a.ciphertextAndTag != b.ciphertextAndTag)
    }

    @Test func wrongPassphraseIsNamed() throws {
        let record = try Self.sealed()
        #expect(throws: KeystoreError.wrongPassphrase) { try Keystore.open(record: record, passphrase: "hunter3 but longer") }
        #expect(KeystoreError.wrongPassphrase.description == "wrong passphrase")
    }

    @Test func corruptionIsDetected() throws {
        let bytes = try Self.sealed().serialized()
        // Any flipped byte anywhere: a parse error, or an error on open; never the secret.
        for i in bytes.indices {
            var damaged = bytes
            damaged[i] ^= 0x01
            #expect(throws: KeystoreError.self) { try Keystore.open(bytes: damaged, passphrase: "hunter2 but longer") }
        }
        // Truncation and bad magic.
        #expect(throws: KeystoreError.self) { try SealedRecord(parsing: Array(bytes.dropLast())) }
        #expect(throws: KeystoreError.self) { try SealedRecord(parsing: Array(bytes.prefix(40))) }
        #expect(throws: KeystoreError.corrupted("not a Shroud keystore record (bad magic)")) {
            var b = bytes; b[0] = UInt8(ascii: "X"); _ = try SealedRecord(parsing: b)
        }
    }

    @Test func alteredCiphertextWithAValidChecksumFailsAuthentication() throws {
        let record = try Self.sealed()
        var ct = record.ciphertextAndTag
        ct[0] ^= 0x80
        let forged = SealedRecord(parameters: record.parameters, salt: record.salt, nonce: record.nonce,
                                  passphraseCheck: record.passphraseCheck, ciphertextAndTag: ct)
        // serialized() recomputes the checksum, so only the GCM tag can catch this.
        #expect(throws: KeystoreError.corrupted("authentication failed (the ciphertext was altered)")) {
            try Keystore.open(bytes: forged.serialized(), passphrase: "hunter2 but longer")
        }
    }

    @Test func parametersOutOfRangeAreRefused() throws {
        let record = try Self.sealed()
        for params in [Argon2idParameters(opsLimit: 0, memLimit: 8 << 10),
                       Argon2idParameters(opsLimit: Argon2idParameters.maximumOpsLimit + 1, memLimit: 8 << 10),
                       Argon2idParameters(opsLimit: 1, memLimit: Argon2idParameters.maximumMemLimit + 1),
                       Argon2idParameters(opsLimit: 1, memLimit: Argon2idParameters.minimumMemLimit - 1)] {
            let bad = SealedRecord(parameters: params, salt: record.salt, nonce: record.nonce,
                                   passphraseCheck: record.passphraseCheck, ciphertextAndTag: record.ciphertextAndTag)
            #expect(throws: KeystoreError.self) { try SealedRecord(parsing: bad.serialized()) }
        }
        // At the limits the record parses.
        let atLimit = SealedRecord(parameters: Argon2idParameters(opsLimit: Argon2idParameters.maximumOpsLimit,
                                                                  memLimit: Argon2idParameters.maximumMemLimit),
                                   salt: record.salt, nonce: record.nonce, passphraseCheck: record.passphraseCheck,
                                   ciphertextAndTag: record.ciphertextAndTag)
        #expect(try SealedRecord(parsing: atLimit.serialized()) == atLimit)
    }

    @Test func secretSizeLimit() throws {
        var random = SeededRandom(seed: 4)
        let atLimit = try Keystore.seal(secret: SecureBytes(count: Keystore.maximumSecretSize), passphrase: "p",
                                        parameters: .testOnly, random: &random)
        #expect(try Keystore.open(bytes: atLimit.serialized(), passphrase: "p").count == Keystore.maximumSecretSize)
        #expect(throws: KeystoreError.tooLarge(Keystore.maximumSecretSize + 1)) {
            try Keystore.seal(secret: SecureBytes(count: Keystore.maximumSecretSize + 1), passphrase: "p",
                              parameters: .testOnly, random: &random)
        }
    }

    /// The real parameters, once: slow by design (Argon2id with 256 MiB).
    @Test func recommendedParametersRoundTrip() throws {
        var random = SystemRandom()
        let record = try Keystore.seal(secret: SecureBytes(copying: Self.secretBytes), passphrase: "real", random: &random)
        #expect(record.parameters == .recommended)
        let parsed = try SealedRecord(parsing: record.serialized())
        #expect(try Keystore.open(record: parsed, passphrase: "real").bytes == Self.secretBytes)
    }
}

@Suite struct ProfileSecretsTests {
    @Test func lockWipesEverySecretAndRefusesUseUntilUnlocked() throws {
        var random = SeededRandom(seed: 9)
        let new = ProfileSecrets(unlocked: ["identity": SecureBytes(copying: [1, 2, 3]), "recovery": SecureBytes(copying: [4, 5, 6])])
        let record = try new.seal(passphrase: "pw", parameters: .testOnly, random: &random)
        new.lock()

        let profile = ProfileSecrets()
        #expect(profile.isLocked)
        #expect(throws: KeystoreError.locked) { try profile.secret(named: "identity") }
        try profile.unlock(record: SealedRecord(parsing: record.serialized()), passphrase: "pw")
        let identity = try #require(try profile.secret(named: "identity"))
        let recovery = try #require(try profile.secret(named: "recovery"))
        #expect(identity.bytes == [1, 2, 3])
        let added = SecureBytes(copying: [7, 7])
        try profile.store(added, named: "extra")

        profile.lock()
        #expect(profile.isLocked)
        #expect(identity.isWiped && recovery.isWiped && added.isWiped)
        #expect(identity.bytes == [0, 0, 0] && recovery.bytes == [0, 0, 0] && added.bytes == [0, 0])
        #expect(throws: KeystoreError.locked) { try profile.secret(named: "identity") }
        #expect(throws: KeystoreError.locked) { try profile.store(SecureBytes(count: 1), named: "x") }
        #expect(throws: KeystoreError.locked) { try profile.seal(passphrase: "pw", parameters: .testOnly, random: &random) }

        // A wrong passphrase leaves it locked; the right one brings the secrets back.
        #expect(throws: KeystoreError.wrongPassphrase) { try profile.unlock(record: record, passphrase: "nope") }
        #expect(profile.isLocked)
        try profile.unlock(record: record, passphrase: "pw")
        #expect(try profile.secret(named: "recovery")?.bytes == [4, 5, 6])
        #expect(try profile.secret(named: "extra") == nil)
    }

    @Test func bundleRoundTripAndLimits() throws {
        let secrets = ["b": SecureBytes(copying: [2]), "a": try SecureBytes(count: 0), "ключ": SecureBytes(copying: [9, 9])]
        let bundle = try SecretBundle.serialize(secrets)
        #expect(bundle.bytes == [0, 3, 1, 0x61, 0, 0, 0, 0, 1, 0x62, 0, 0, 0, 1, 2] + [8] + Array("ключ".utf8) + [0, 0, 0, 2, 9, 9])
        let parsed = try SecretBundle.parse(bundle)
        #expect(parsed.mapValues(\.bytes) == secrets.mapValues(\.bytes))
        let most = Dictionary(uniqueKeysWithValues: (0..<SecretBundle.maximumSecrets).map { ("s\($0)", SecureBytes(copying: [1])) })
        #expect(try SecretBundle.parse(SecretBundle.serialize(most)).count == SecretBundle.maximumSecrets)
        var tooMany = most
        tooMany["extra"] = try SecureBytes(count: 1)
        #expect(throws: KeystoreError.self) { try SecretBundle.serialize(tooMany) }
        #expect(throws: KeystoreError.self) { try SecretBundle.serialize(["": SecureBytes(count: 1)]) }
    }

    @Test func malformedBundlesAreRefused() throws {
        let good = try SecretBundle.serialize(["a": SecureBytes(copying: [1]), "b": SecureBytes(copying: [2])]).bytes
        for cut in 0..<good.count {
            #expect(throws: KeystoreError.self) { try SecretBundle.parse(SecureBytes(copying: good[..<cut])) }
        }
        #expect(throws: KeystoreError.self) { try SecretBundle.parse(SecureBytes(copying: good + [0])) }
        var unordered = good; unordered[3] = 0x63     // "c" before "b"
        #expect(throws: KeystoreError.self) { try SecretBundle.parse(SecureBytes(copying: unordered)) }
        #expect(throws: KeystoreError.self) { try SecretBundle.parse(SecureBytes(copying: [0, 65])) }
        #expect(throws: KeystoreError.self) { try SecretBundle.parse(SecureBytes(copying: [0, 1, 1, 0xff, 0, 0, 0, 0])) }
    }
}
