// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "rowcast",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "rowcast", targets: ["rowcast"]),
        .executable(name: "rowcast-bench", targets: ["RowcastBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(
            name: "RowcastCore"
        ),
        .target(
            name: "RowcastPostgres",
            dependencies: [
                "CLibPQ",
                "RowcastCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            resources: [
                .embedInCode("SQL/rowcast_trigger.sql"),
                .embedInCode("SQL/rowcast_trigger_teardown.sql"),
            ]
        ),
        // What rowcast says and reads on the wire, without I/O: the encoded record and
        // each transport's framing, the client-message and Engine.IO parsers, Engine.IO's
        // session state machine.
        .target(
            name: "RowcastWire",
            dependencies: [
                "RowcastCore",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(
            name: "RowcastServer",
            dependencies: [
                "RowcastCore",
                "RowcastWire",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            resources: [.embedInCode("Page/index.html")]
        ),
        .executableTarget(
            name: "rowcast",
            dependencies: [
                "RowcastCore",
                "RowcastPostgres",
                "RowcastServer",
                "RowcastWire",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // `make bench` only: the baseline broadcaster and the load client.
        .executableTarget(
            name: "RowcastBench",
            dependencies: [
                "RowcastCore",
                "RowcastServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // What the test targets share: waiting without Dispatch's timers, naming tables
        // as text, the live database's gate and psql, and ScriptedCapture, a capture
        // source without a database for the server tests.
        .target(
            name: "RowcastTestSupport",
            dependencies: [
                "RowcastCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/RowcastTestSupport"
        ),
        .testTarget(
            name: "RowcastTestSupportTests",
            dependencies: ["RowcastCore", "RowcastTestSupport"]
        ),
        .testTarget(
            name: "RowcastCoreTests",
            dependencies: ["RowcastCore", "RowcastTestSupport"]
        ),
        .testTarget(
            name: "RowcastWireTests",
            dependencies: ["RowcastCore", "RowcastWire", "RowcastTestSupport", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "RowcastPostgresTests",
            dependencies: ["RowcastCore", "RowcastPostgres", "RowcastTestSupport"]
        ),
        // The binary as users run it, with real clients: psql, WebSockets, headless Chromium.
        .testTarget(
            name: "RowcastCLITests",
            dependencies: [
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                "RowcastTestSupport",
            ]
        ),
        .testTarget(
            name: "RowcastServerTests",
            dependencies: [
                "RowcastCore",
                "RowcastWire",
                "RowcastPostgres",
                "RowcastServer",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HummingbirdWSTesting", package: "hummingbird-websocket"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                "RowcastTestSupport",
            ]
        ),
    ]
)
