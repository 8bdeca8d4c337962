// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "lmsvr",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lmsvr", targets: ["CLI"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // AsyncThrowingChannel: a stream's upstream reader hands chunks to the client writer with
        // backpressure, so an idle timer can tell upstream silence from a client not reading.
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.4"),
        // Deque: the settle journal's queue of waiting records (O(1) at both ends while draining).
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // HdrHistogram: latency percentiles without storing every sample, for the benchmark driver only.
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "JSONKit"),
        .target(name: "Core", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "SQLStore", dependencies: [
            "Core", "JSONKit",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "Migrate", dependencies: ["SQLStore"]),
        .target(name: "PGStore", dependencies: ["CLibPQ", "Core", "SQLStore", "Migrate",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "SQLiteStore", dependencies: ["CSQLite", "Core", "SQLStore", "Migrate",
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .target(name: "Providers", dependencies: ["Core", "JSONKit"]),
        .target(name: "App", dependencies: [
            "Core", "SQLStore", "Providers", "JSONKit",
            .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .executableTarget(name: "CLI", dependencies: [
            "Core", "SQLStore", "PGStore", "SQLiteStore", "Migrate", "App",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .executableTarget(name: "store-bench", dependencies: ["Core", "SQLStore", "SQLiteStore", "PGStore", "Migrate"],
                          path: "bench/StoreBench"),
        .executableTarget(name: "bench-driver", dependencies: [
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], path: "bench/Driver"),
        .executableTarget(name: "bench-floor", dependencies: [
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ], path: "bench/Floor"),
        .target(name: "FakeUpstream", dependencies: ["JSONKit", .product(name: "Hummingbird", package: "hummingbird"),
                                                     .product(name: "HTTPTypes", package: "swift-http-types")]),
        .executableTarget(name: "lmsvr-fake-upstream", dependencies: ["FakeUpstream",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio")], path: "Sources/FakeUpstreamServer"),
        .target(name: "TestSupport", dependencies: ["Core", "SQLStore", "SQLiteStore", "PGStore", "Migrate"]),
        .testTarget(name: "CoreTests", dependencies: ["Core"]),
        .testTarget(name: "JSONKitTests", dependencies: ["JSONKit"]),
        .testTarget(name: "ProvidersTests", dependencies: ["Providers", "Core", "JSONKit"]),
        .testTarget(name: "MigrateTests", dependencies: ["Migrate", "SQLiteStore", "PGStore", "SQLStore", "TestSupport"]),
        .testTarget(name: "StoreContractTests", dependencies: ["Core", "SQLStore", "SQLiteStore", "PGStore", "TestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["Core", "TestSupport"]),
        .testTarget(name: "AppTests", dependencies: [
            "App", "Core", "SQLStore", "SQLiteStore", "PGStore", "TestSupport", "FakeUpstream", "JSONKit",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
        ]),
    ]
)
