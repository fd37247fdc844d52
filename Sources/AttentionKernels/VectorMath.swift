/// SIMD row primitives for the flash kernel's online softmax, on vectors of 16 floats (four SSE,
/// two AVX2 or one AVX-512 register).
///
/// Written so that the baseline compilation (x86-64 SSE2, or arm64) vectorises too: no
/// `floor`/`round` (SSE4.1), no `pointwiseMax` (measured 15× slower than
/// `replace(with:where:)` there), no scalar `expf` in a loop.
enum VectorMath {
    typealias Vector = SIMD16<Float>
    static let width = Vector.scalarCount

    /// `2ˣ` lane-wise, within 3 ulp of `exp2f` for `x` in `[−126, 127]`; exactly `0` below
    /// `−126` (and for `−∞`), so hidden keys get exactly zero weight.
    ///
    /// `2ˣ = 2ⁿ · 2ᶠ` with `n = round(x)` found by the 1.5·2²³ magic-number trick (round to
    /// nearest with adds only), `f = x − n` in `[−½, ½]`, and a degree-5 minimax polynomial for
    /// `2ᶠ` (relative error 2.3e-7 in fp32 evaluation). `2ⁿ` is assembled in the exponent bits.
    /// The kernel works in base 2 (scores pre-multiplied by log₂e), which saves the `x·log₂e`
    /// range reduction of a natural exponential.
    @inline(__always)
    static func exp2(_ x: Vector) -> Vector {
        let magic: Float = 12_582_912  // 1.5 · 2²³
        let shifted = x + magic
        let f = x - (shifted - magic)
        var p = multiplyAdd(Vector(repeating: 1.327_647_13e-3), f, Vector(repeating: 9.675_541_89e-3))
        p = multiplyAdd(p, f, Vector(repeating: 5.550_713_09e-2))
        p = multiplyAdd(p, f, Vector(repeating: 2.402_212_02e-1))
        p = multiplyAdd(p, f, Vector(repeating: 6.931_469_44e-1))
        p = multiplyAdd(p, f, Vector(repeating: 1.000_000_12))
        // The low mantissa bits of `shifted` hold n + 0x40_0000; rebias to 127 and shift in place.
        let bits = unsafeBitCast(shifted, to: SIMD16<UInt32>.self)
        let powerOfTwo = unsafeBitCast((bits &- (0x4B40_0000 - 127)) &<< 23, to: Vector.self)
        var result = p * powerOfTwo
        result.replace(with: 0, where: x .< -126)
        return result
    }

    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> Vector {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inline(__always)
    static func store(_ value: Vector, to pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Vector.self)
    }

    /// Largest non-NaN value of `row[0..<count]`; `count` a multiple of ``width``. `−∞` for a
    /// row with no visible (and no NaN) score.
    @inline(__always)
    static func maximum(_ row: UnsafePointer<Float>, count: Int) -> Float {
        var best = Vector(repeating: -.infinity)
        var j = 0
        while j < count {
            let v = load(row + j)
            // Compiles to `maxps`; a NaN lane never wins (the caller checks that case).
            best.replace(with: v, where: v .> best)
            j += width
        }
        return horizontalMaximum(best)
    }

    /// Largest lane, by halving (vector ops) rather than a 16-step scalar loop.
    @inline(__always)
    static func horizontalMaximum(_ v: Vector) -> Float {
        var half8 = v.lowHalf
        half8.replace(with: v.highHalf, where: v.highHalf .> half8)
        var half4 = half8.lowHalf
        half4.replace(with: half8.highHalf, where: half8.highHalf .> half4)
        return max(max(half4[0], half4[1]), max(half4[2], half4[3]))
    }

    /// Sum of the lanes, by halving.
    @inline(__always)
    static func horizontalSum(_ v: Vector) -> Float {
        let half8 = v.lowHalf + v.highHalf
        let half4 = half8.lowHalf + half8.highHalf
        return (half4[0] + half4[1]) + (half4[2] + half4[3])
    }

    /// `row[j] = 2^(row[j] − shift)` in place and their sum; `count` a multiple of ``width``.
    @inline(__always)
    static func exponentiateAndSum(_ row: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        var sum = Vector(repeating: 0)
        var j = 0
        while j < count {
            let e = exp2(load(row + j) - shift)
            store(e, to: row + j)
            sum += e
            j += width
        }
        return horizontalSum(sum)
    }

    /// The base-2 scores of one row made final: `row[j] += log₂e · mask[j]` for `j < count` when a
    /// mask is given, then `−∞` outside `visible` and in the padding up to `paddedCount`.
    @inline(__always)
    static func maskScores(
        _ row: UnsafeMutablePointer<Float>, count: Int, paddedCount: Int, visible: Range<Int>,
        mask: UnsafePointer<Float>?
    ) {
        if let mask { addScaledMask(mask, count: count, to: row) }
        row.update(repeating: -.infinity, count: visible.lowerBound)
        (row + visible.upperBound).update(repeating: -.infinity, count: paddedCount - visible.upperBound)
    }

    /// `row[j] += log₂e · mask[j]` for `j < count`.
    @inline(__always)
    static func addScaledMask(_ mask: UnsafePointer<Float>, count: Int, to row: UnsafeMutablePointer<Float>) {
        let log2e: Float = 1.442_695_04
        var j = 0
        while j + width <= count {
            store(multiplyAdd(load(mask + j), Vector(repeating: log2e), load(row + j)), to: row + j)
            j += width
        }
        while j < count {
            row[j] = multiplyAdd(mask[j], log2e, row[j])
            j += 1
        }
    }

    /// `target[0..<count] = source[0..<count] · factor`; `source` may equal `target`.
    @inline(__always)
    static func scale(
        _ source: UnsafePointer<Float>, count: Int, by factor: Float, into target: UnsafeMutablePointer<Float>
    ) {
        var j = 0
        while j + width <= count {
            store(load(source + j) * factor, to: target + j)
            j += width
        }
        while j < count {
            target[j] = source[j] * factor
            j += 1
        }
    }
}
