import AttentionKernelInterface
import CPUFeatures
import Foundation
import AttentionKernelsBaseline
#if canImport(AttentionKernelsAVX2)
import AttentionKernelsAVX2
#endif
#if canImport(AttentionKernelsAVX512)
import AttentionKernelsAVX512
#endif

/// The instruction-set level the library's Swift kernels run at.
///
/// The hot loops (the flash kernel's softmax step, the decoding dot products, RoPE) are
/// compiled three times on x86-64, and the copy to run is chosen once per process, as PyTorch
/// and ONNX Runtime do:
///
/// - ``baseline``: the app's own target CPU (x86-64 SSE2, or any other architecture);
/// - ``avx2``: x86-64-v3 (AVX2, FMA, BMI2, F16C, …), 8-float registers and fused multiply-add;
/// - ``avx512``: x86-64-v4 (AVX-512 F/BW/CD/DQ/VL), 16-float registers.
///
/// ``active`` is the highest level ``supported`` by the CPU and its operating system, lowered
/// by the environment variable `ATTENTION_CPU_LEVEL=baseline|avx2|avx512` when set (a value
/// above what the CPU has, or one not in that list, is ignored). OpenBLAS chooses its own
/// kernels independently (`OPENBLAS_CORETYPE`).
///
/// Levels round differently (fused multiply-add rounds once), so results of two levels can
/// differ in the last bits; within one level they are bitwise reproducible.
public enum CPULevel: String, Sendable, CaseIterable, Comparable {
    case baseline
    case avx2
    case avx512

    /// The level this process's kernels run at, fixed when first read.
    public static let active: CPULevel = {
        let environment = ProcessInfo.processInfo.environment["ATTENTION_CPU_LEVEL"]
        return min(supported, requested(byEnvironmentValue: environment) ?? supported)
    }()

    /// The highest level this CPU, its operating system and this build support.
    public static let supported: CPULevel = {
        let detected: CPULevel = switch attention_cpu_level() {
        case 4...: .avx512
        case 3: .avx2
        default: .baseline
        }
        return min(detected, built)
    }()

    /// The highest level compiled into this build (`baseline` off x86-64).
    static var built: CPULevel {
        #if canImport(AttentionKernelsAVX512)
        .avx512
        #elseif canImport(AttentionKernelsAVX2)
        .avx2
        #else
        .baseline
        #endif
    }

    /// The level an `ATTENTION_CPU_LEVEL` value asks for; `nil` when unset or not a level name.
    static func requested(byEnvironmentValue value: String?) -> CPULevel? {
        value.flatMap { CPULevel(rawValue: $0.trimmingCharacters(in: .whitespaces).lowercased()) }
    }

    public static func < (lhs: CPULevel, rhs: CPULevel) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }

    /// This level's kernels; `nil` for a level not compiled into this build.
    var kernels: (any AttentionKernelSet.Type)? {
        switch self {
        case .baseline:
            return AttentionKernelsBaseline.LevelKernels.self
        case .avx2:
            #if canImport(AttentionKernelsAVX2)
            return AttentionKernelsAVX2.LevelKernels.self
            #else
            return nil
            #endif
        case .avx512:
            #if canImport(AttentionKernelsAVX512)
            return AttentionKernelsAVX512.LevelKernels.self
            #else
            return nil
            #endif
        }
    }
}

/// The kernels every call of this process runs: those of ``CPULevel/active``.
enum Kernels {
    static let active: any AttentionKernelSet.Type = CPULevel.active.kernels ?? AttentionKernelsBaseline.LevelKernels.self
}
