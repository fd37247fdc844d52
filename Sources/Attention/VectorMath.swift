/// SIMD row primitives for the flash kernel's online softmax.
///
/// Written for baseline x86-64 (SSE2) and arm64 code generation, which is what an app that
/// depends on this package gets: no `floor`/`round` (SSE4.1), no `pointwiseMax` (measured 15×
/// slower than `replace(with:where:)` there), no scalar `expf` in a loop.
enum VectorMath {
    typealias Vector = SIMD16<Float>
    static let width = Vector.scalarCount

    /// `eˣ` lane-wise, within 2 ulp of `expf` for `x` in `[−87.3, 88.7]`; exactly `0` below
    /// `−87.3` (and for `−∞`), so hidden keys get exactly zero weight.
    ///
    /// `eˣ = 2ⁿ · eʳ` with `n = round(x·log₂e)` found by the 1.5·2²³ magic-number trick (round to
    /// nearest with adds only), `r = x − n·ln 2` in two parts, and Cephes' degree-6 polynomial
    /// for `eʳ` on `|r| ≤ ln2/2`. `2ⁿ` is assembled in the exponent bits.
    @inline(__always)
    static func exp(_ x: Vector) -> Vector {
        let magic: Float = 12_582_912  // 1.5 · 2²³
        let shifted = x * 1.442_695_04 + magic
        let n = shifted - magic
        let r = x - n * 0.693_359_375 - n * -2.121_944_4e-4
        var p = 1.987_569_15e-4 * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_12e-1
        p = p * (r * r) + r + 1
        // The low mantissa bits of `shifted` hold n + 0x40_0000; rebias to 127 and shift in place.
        let bits = unsafeBitCast(shifted, to: SIMD16<UInt32>.self)
        let powerOfTwo = unsafeBitCast((bits &- (0x4B40_0000 - 127)) &<< 23, to: Vector.self)
        var result = p * powerOfTwo
        result.replace(with: 0, where: x .< -87.3)
        return result
    }

    /// Largest of `row[0..<count]`; `count` a multiple of ``width``. `−∞` for an all-hidden row.
    @inline(__always)
    static func maximum(_ row: UnsafePointer<Float>, count: Int) -> Float {
        var best = Vector(repeating: -.infinity)
        var j = 0
        while j < count {
            let v = Vector(UnsafeBufferPointer(start: row + j, count: width))
            best.replace(with: v, where: v .> best)
            j += width
        }
        return best.max()
    }

    /// `row[j] = e^(row[j] − shift)` in place and their sum; `count` a multiple of ``width``.
    @inline(__always)
    static func exponentiateAndSum(_ row: UnsafeMutablePointer<Float>, count: Int, shift: Float) -> Float {
        var sum = Vector(repeating: 0)
        var j = 0
        while j < count {
            let e = exp(Vector(UnsafeBufferPointer(start: row + j, count: width)) - shift)
            UnsafeMutableRawPointer(row + j).storeBytes(of: e, as: Vector.self)
            sum += e
            j += width
        }
        return sum.sum()
    }

    /// `row[0..<count] *= factor`.
    @inline(__always)
    static func scale(_ row: UnsafeMutablePointer<Float>, count: Int, by factor: Float) {
        for j in 0..<count { row[j] *= factor }
    }
}
