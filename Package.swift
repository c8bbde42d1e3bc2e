// swift-tools-version:6.0
// Shroud: end-to-end encrypted voice, screen sharing, files and text with a blind relay.
// Layout and dependency rule: see DESIGN.md §2. The pure targets (ShroudWire, ShroudCrypto,
// ShroudRelayCore) import no NIOPosix, no device library and no storage; ShroudRelayCore never
// imports ShroudCrypto, so the relay is blind by construction.
import PackageDescription

let package = Package(
    name: "Shroud",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "shroud", targets: ["shroud"]),
        .executable(name: "shroud-relay", targets: ["shroud-relay"]),
        .executable(name: "shroud-bench", targets: ["shroud-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
    ],
    targets: [
        // MARK: C libraries (module map + static inline shims for variadic calls and macros)
        .systemLibrary(name: "COpus", path: "Sources/C/COpus", pkgConfig: "opus",
                       providers: [.apt(["libopus-dev"])]),
        .systemLibrary(name: "CVPX", path: "Sources/C/CVPX", pkgConfig: "vpx",
                       providers: [.apt(["libvpx-dev"])]),
        .systemLibrary(name: "CYUV", path: "Sources/C/CYUV",
                       providers: [.apt(["libyuv-dev"])]),
        .systemLibrary(name: "CX11", path: "Sources/C/CX11", pkgConfig: "xext",
                       providers: [.apt(["libx11-dev", "libxext-dev"])]),
        .systemLibrary(name: "CALSA", path: "Sources/C/CALSA", pkgConfig: "alsa",
                       providers: [.apt(["libasound2-dev"])]),
        .systemLibrary(name: "CSodium", path: "Sources/C/CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),
        // recvmmsg/sendmmsg for the relay's media socket (Glibc's Swift module lacks them).
        .target(name: "CShroudIO", path: "Sources/C/CShroudIO"),
        .systemLibrary(name: "COpenSSL", path: "Sources/C/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),

        // MARK: Pure cores
        .target(name: "ShroudWire"),
        .target(name: "ShroudCrypto", dependencies: [
            "ShroudWire", "CSodium", "COpenSSL",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "ShroudRelayCore", dependencies: [
            "ShroudWire",
            // Only to verify Ed25519 signatures that authenticate clients (DESIGN.md §2).
            .product(name: "Crypto", package: "swift-crypto"),
        ]),

        // MARK: Devices, storage, network adapters
        // ShroudCrypto for the voice engine's SFrame layer (VoiceEngine.swift).
        .target(name: "ShroudMedia", dependencies: ["COpus", "CVPX", "CYUV", "CX11", "CALSA", "ShroudCrypto", "ShroudWire"]),
        .target(name: "ShroudStore", dependencies: [
            "ShroudCrypto", "ShroudWire", "ShroudRelayCore",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "ShroudNet", dependencies: [
            "ShroudRelayCore", "CShroudIO",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // MARK: Executables
        .executableTarget(name: "shroud-relay", dependencies: [
            "ShroudRelayCore", "ShroudNet", "ShroudStore",
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "shroud", dependencies: [
            "ShroudWire", "ShroudCrypto", "ShroudMedia", "ShroudStore", "ShroudNet",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .executableTarget(name: "shroud-impair"),
        // Load generator against a real relay process: one file per mode (tools/loadgen).
        .executableTarget(name: "shroud-loadgen", dependencies: [
            "ShroudWire", "ShroudRelayCore", "ShroudNet", "CShroudIO",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "shroud-bench", dependencies: [
            "ShroudWire", "ShroudCrypto", "ShroudMedia", "ShroudTestSupport", "ShroudRelayCore", "ShroudStore",
        ]),

        // MARK: Tests
        // Real servers and reference tools for the tests: a private Xvfb and PulseAudio, ffmpeg as
        // an independent decoder, the committed fixtures. Never linked into a product.
        .target(name: "ShroudTestSupport", dependencies: ["ShroudMedia", "CX11"]),
        .testTarget(name: "ShroudWireTests", dependencies: ["ShroudWire", "ShroudTestSupport"]),
        .testTarget(name: "ShroudCryptoTests", dependencies: ["ShroudCrypto", "ShroudWire"],
                    resources: [.copy("Resources")]),
        .testTarget(name: "ShroudRelayCoreTests", dependencies: [
            "ShroudRelayCore", "ShroudWire", "ShroudTestSupport",
            // The relay tests run against every store implementation, SQLite included.
            "ShroudStore",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "ShroudMediaTests", dependencies: ["ShroudMedia", "ShroudTestSupport", "CX11", "ShroudWire", "ShroudRelayCore", "ShroudCrypto"]),
        .testTarget(name: "ShroudStoreTests", dependencies: [
            "ShroudStore", "ShroudCrypto", "ShroudRelayCore", "ShroudWire", .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .testTarget(name: "ShroudNetTests", dependencies: [
            "ShroudNet", "ShroudRelayCore", "ShroudTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOWebSocket", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            "ShroudWire",
        ]),
        .testTarget(name: "EndToEndTests", dependencies: [
            "ShroudTestSupport", "ShroudMedia", "CX11", "ShroudCrypto",
            // A real WebSocket session client, to drive the relay binary; UDP sockets for its media plane.
            "ShroudNet", "ShroudWire", "CShroudIO",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
