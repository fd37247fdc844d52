// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Attention",
    products: [
        .library(name: "Attention", targets: ["Attention"]),
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
        .testTarget(
            name: "AttentionTests",
            dependencies: ["Attention"]
        ),
    ]
)
