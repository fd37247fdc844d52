// swift-tools-version: 6.2
import PackageDescription

// The hot Swift loops (Sources/AttentionKernels) are compiled once per x86-64 level, each copy
// its own module with its own flags; `Attention` picks one per process from the CPU
// (`CPULevel`). SwiftPM accepts these `unsafeFlags` in a dependency pinned by version from
// tools version 6.2 on (DESIGN.md §4), so apps pass no flags. `-O` holds in debug builds too:
// an optimised module inlines its helpers instead of emitting out-of-line generic copies that
// another module might also emit (the linker keeps one copy, whatever its level).
struct KernelLevel {
    var target: String
    var flags: [String]
    var defines: [String]
}

#if arch(x86_64)
let kernelLevels = [
    KernelLevel(target: "AttentionKernelsBaseline", flags: ["-O"], defines: []),
    KernelLevel(target: "AttentionKernelsAVX2", flags: ["-O", "-Xcc", "-march=x86-64-v3"],
                defines: ["ATTENTION_LEVEL_AVX2", "ATTENTION_FMA"]),
    KernelLevel(target: "AttentionKernelsAVX512", flags: ["-O", "-Xcc", "-march=x86-64-v4"],
                defines: ["ATTENTION_LEVEL_AVX512", "ATTENTION_FMA"]),
]
#else
// Other architectures build the baseline only, for their own default target CPU.
let kernelLevels = [KernelLevel(target: "AttentionKernelsBaseline", flags: ["-O"], defines: [])]
#endif

let kernelTargets: [Target] = kernelLevels.map { level in
    .target(
        name: level.target,
        dependencies: ["AttentionKernelInterface"],
        swiftSettings: [.unsafeFlags(level.flags)] + level.defines.map { .define($0) }
    )
}

let package = Package(
    name: "Attention",
    products: [
        .library(name: "Attention", targets: ["Attention"]),
        .executable(name: "attention-bench", targets: ["attention-bench"]),
        .executable(name: "attention-train", targets: ["attention-train"]),
    ],
    dependencies: [
        // The commands' command lines only; the library depends on OpenBLAS and LAPACKE alone.
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
        // The kernels' protocol and argument types; declarations only, no level flags.
        .target(name: "AttentionKernelInterface"),
        // cpuid and xgetbv, compiled without -m flags, for choosing the level at run time.
        .target(name: "CPUFeatures"),
        .target(
            name: "Attention",
            dependencies: ["CBLAS", "CLAPACKE", "CPUFeatures", "AttentionKernelInterface"]
                + kernelLevels.map { .target(name: $0.target) }
        ),
        // The commands' shared exit-status handling.
        .target(
            name: "AttentionCommandLine",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // The benchmark's command, workloads and report formats, as a library so that
        // `AttentionBenchTests` can parse arguments and run a tiny workload in-process.
        .target(
            name: "AttentionBenchCore",
            dependencies: [
                "Attention",
                "AttentionCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "attention-bench",
            dependencies: ["AttentionBenchCore"]
        ),
        // The training command (a student layer learns a teacher's outputs), as a library so
        // that `AttentionTrainTests` can run a tiny training in-process.
        .target(
            name: "AttentionTrainCore",
            dependencies: [
                "Attention",
                "AttentionCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "attention-train",
            dependencies: ["AttentionTrainCore"]
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
        .testTarget(
            name: "AttentionTrainTests",
            dependencies: ["AttentionTrainCore"]
        ),
    ] + kernelTargets
)
