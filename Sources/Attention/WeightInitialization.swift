import CLAPACKE

/// How ``MultiHeadAttention`` fills its weights on construction.
public enum WeightInitialization: Sendable, Equatable {
    /// PyTorch's defaults: each `nn.Linear` weight `[out, in]` from `U(−1/√in, 1/√in)`
    /// (what `kaiming_uniform_(a: √5)` reduces to); sink states from `N(0, 0.02²)`.
    case pytorchDefault
    /// `torch.nn.init.orthogonal_`: rows (or columns, for a wide matrix) orthonormal, times
    /// `gain`, from the QR factorisation of a standard-normal matrix (LAPACKE `sgeqrf` +
    /// `sorgqr`), signs fixed so `R` has a positive diagonal. Sink states as in
    /// ``pytorchDefault``.
    case orthogonal(gain: Float = 1)
}

/// A seeded 64-bit generator (xoshiro256**, state filled by SplitMix64).
///
/// Uses only integer arithmetic and correctly rounded floating-point operations, so a seed
/// gives the same numbers on every platform and every run.
struct SeededGenerator: RandomNumberGenerator {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var splitMix = seed
        func next() -> UInt64 {
            splitMix &+= 0x9E37_79B9_7F4A_7C15
            return DropoutMask.mix(splitMix &- 0x9E37_79B9_7F4A_7C15)
        }
        state = (next(), next(), next(), next())
    }

    mutating func next() -> UInt64 {
        let result = rotateLeft(state.1 &* 5, 7) &* 9
        let shifted = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= shifted
        state.3 = rotateLeft(state.3, 45)
        return result
    }

    private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in `[0, 1)` with 53 random bits.
    mutating func nextUnitDouble() -> Double {
        Double(next() >> 11) * 0x1p-53
    }

    /// Uniform in `[−bound, bound)`.
    mutating func nextUniform(bound: Double) -> Float {
        Float((2 * nextUnitDouble() - 1) * bound)
    }

    /// Standard normal by Marsaglia's polar method: no trigonometry, and a logarithm computed
    /// from `+ − × ÷` alone, so the result is bit-identical across platforms and C libraries.
    mutating func nextStandardNormal() -> Double {
        while true {
            let u = 2 * nextUnitDouble() - 1
            let v = 2 * nextUnitDouble() - 1
            let s = u * u + v * v
            if s > 0 && s < 1 {
                return u * (-2 * portableLog(s) / s).squareRoot()
            }
        }
    }
}

/// Natural logarithm of a positive, finite, normal `x`, from IEEE-exact operations only.
///
/// `x = m · 2^e` with `m` in `[√½, √2)`, then `log m = 2·atanh(z)`, `z = (m − 1)/(m + 1)`,
/// summed to convergence (`|z| < 0.172`, so 20 terms reach double precision).
func portableLog(_ x: Double) -> Double {
    var exponent = Int(x.exponent)
    var mantissa = x.significand  // in [1, 2)
    if mantissa > 1.4142135623730951 {
        mantissa /= 2
        exponent += 1
    }
    let z = (mantissa - 1) / (mantissa + 1)
    let z2 = z * z
    var term = z
    var sum = 0.0
    var k = 1.0
    while k < 45 {
        sum += term / k
        term *= z2
        k += 2
    }
    return 2 * sum + Double(exponent) * 0.6931471805599453
}

/// Parameter tensors drawn from `seed`. Each parameter has its own stream, so turning sinks on
/// or off does not change the projection weights drawn from the same seed.
enum WeightInitializer {
    static func stream(seed: UInt64, parameter: AttentionParameter) -> SeededGenerator {
        SeededGenerator(seed: DropoutMask.mix(seed ^ DropoutMask.mix(UInt64(parameter.streamIndex))))
    }

    /// A `[rows, columns]` `nn.Linear` weight (`columns` = fan-in).
    static func linear(
        rows: Int, columns: Int, method: WeightInitialization,
        generator: inout SeededGenerator
    ) throws -> Tensor {
        switch method {
        case .pytorchDefault:
            let bound = 1 / Double(columns).squareRoot()
            let scalars = (0..<rows * columns).map { _ in generator.nextUniform(bound: bound) }
            return try Tensor(shape: [rows, columns], scalars: scalars)
        case .orthogonal(let gain):
            return try orthogonal(rows: rows, columns: columns, gain: gain, generator: &generator)
        }
    }

    /// `[rows, columns]` from `N(0, standardDeviation²)`.
    static func normal(
        rows: Int, columns: Int, standardDeviation: Double, generator: inout SeededGenerator
    ) throws -> Tensor {
        let scalars = (0..<rows * columns).map { _ in
            Float(generator.nextStandardNormal() * standardDeviation)
        }
        return try Tensor(shape: [rows, columns], scalars: scalars)
    }

    /// `torch.nn.init.orthogonal_` for a `[rows, columns]` matrix.
    ///
    /// Factor the tall `[tall, wide]` normal matrix `A = QR` (the transpose when the weight is
    /// wide), flip the columns of `Q` where `R`'s diagonal is negative, and transpose back.
    static func orthogonal(
        rows: Int, columns: Int, gain: Float, generator: inout SeededGenerator
    ) throws -> Tensor {
        let tall = max(rows, columns), wide = min(rows, columns)
        var a = (0..<tall * wide).map { _ in Float(generator.nextStandardNormal()) }
        var tau = [Float](repeating: 0, count: wide)
        var diagonal = [Float](repeating: 0, count: wide)
        let status: Int32 = a.withUnsafeMutableBufferPointer { a in
            tau.withUnsafeMutableBufferPointer { tau in
                let m = Int32(tall), n = Int32(wide)
                let factored = LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, m, n, a.baseAddress, n, tau.baseAddress)
                guard factored == 0 else { return factored }
                for i in 0..<wide { diagonal[i] = a[i * wide + i] }
                return LAPACKE_sorgqr(LAPACK_ROW_MAJOR, m, n, n, a.baseAddress, n, tau.baseAddress)
            }
        }
        guard status == 0 else {
            throw AttentionError.invalidConfiguration(
                "orthogonal initialisation of a [\(rows), \(columns)] weight failed (LAPACKE status \(status))")
        }
        var scalars = [Float](repeating: 0, count: rows * columns)
        for r in 0..<tall {
            for c in 0..<wide {
                let value = a[r * wide + c] * (diagonal[c] < 0 ? -gain : gain)
                // q is [tall, wide]; a wide weight is its transpose.
                if rows >= columns { scalars[r * columns + c] = value } else { scalars[c * columns + r] = value }
            }
        }
        return try Tensor(shape: [rows, columns], scalars: scalars)
    }
}
