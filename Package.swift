// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Attention",
    products: [
        .library(name: "Attention", targets: ["Attention"]),
        .executable(name: "attention-bench", targets: ["attention-bench"]),
    ],
    dependencies: [
        // The benchmark's command line only; the library depends on OpenBLAS and LAPACKE alone.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `swift package generate-documentation --target Attention` (DocC); build-time only.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // OpenBLAS's CBLAS interface. Only `Sources/Attention/BLAS.swift` imports it.
        .systemLibrary(
            name: "CBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]
        ),
        // LAPACKE, used once: QR factorisation for orthogonal weight initialisation.
        .systemLibrary(
            name: "CLAPACKE",
            pkgConfig: "lapacke",
            providers: [.apt(["liblapacke-dev"]), .brew(["lapack"])]
        ),
        .target(
            name: "Attention",
            dependencies: ["CBLAS", "CLAPACKE"]
        ),
        // The benchmark's command, workloads and report formats, as a library so that
        // `AttentionBenchTests` can parse arguments and run a tiny workload in-process.
        .target(
            name: "AttentionBenchCore",
            dependencies: [
                "Attention",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "attention-bench",
            dependencies: ["AttentionBenchCore"]
        ),
        .testTarget(
            name: "AttentionTests",
            dependencies: ["Attention"],
            // Golden outputs from PyTorch (Scripts/make_fixtures.py), read via Bundle.module.
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "AttentionBenchTests",
            dependencies: ["AttentionBenchCore"]
        ),
    ]
)
