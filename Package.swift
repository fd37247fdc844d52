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
        .executableTarget(
            name: "attention-bench",
            dependencies: [
                "Attention",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "AttentionTests",
            dependencies: ["Attention"],
            // Golden outputs from PyTorch (Scripts/make_fixtures.py), read via Bundle.module.
            resources: [.copy("Fixtures")]
        ),
    ]
)
