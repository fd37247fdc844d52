import XCTest
@testable import Attention

/// `scaledDotProductAttentionWithPullback` against a float64 naive backward written from the
/// formulas here (itself checked against central finite differences), in both layouts, with
/// GQA, bottom-right causal alignment, a mask that hides a whole row, and both kernels.
final class ScaledDotProductAttentionBackwardTests: XCTestCase {
    /// Token-major float64 attention, `[B, L, H·D]` queries and `[B, S, Hkv·D]` keys/values,
    /// `mask` `[L, S]` (or nil), causal bottom-right: `out` and, for `dOut`, `(dq, dk, dv)`.
    struct NaiveSDPA {
        let batch: Int, queries: Int, keys: Int, heads: Int, kvHeads: Int, headDim: Int
        let causal: Bool
        let mask: [Double]?

        func forward(_ q: [Double], _ k: [Double], _ v: [Double]) -> [Double] {
            run(q, k, v, dOut: nil).out
        }

        func run(_ q: [Double], _ k: [Double], _ v: [Double], dOut: [Double]?)
            -> (out: [Double], dq: [Double], dk: [Double], dv: [Double]) {
            let d = headDim, qw = heads * d, kw = kvHeads * d, scale = 1 / Double(d).squareRoot()
            var out = [Double](repeating: 0, count: q.count)
            var dq = [Double](repeating: 0, count: q.count), dk = [Double](repeating: 0, count: k.count)
            var dv = [Double](repeating: 0, count: v.count)
            for b in 0..<batch {
                for h in 0..<heads {
                    let g = h / (heads / kvHeads)
                    for i in 0..<queries {
                        let qi = (b * queries + i) * qw + h * d
                        var s = [Double](repeating: -.infinity, count: keys)
                        for j in 0..<keys where !causal || j <= i + keys - queries {
                            let kj = (b * keys + j) * kw + g * d
                            s[j] = scale * (0..<d).reduce(0) { $0 + q[qi + $1] * k[kj + $1] } + (mask?[i * keys + j] ?? 0)
                        }
                        let m = s.max() ?? -.infinity
                        guard m > -.infinity else { continue }  // sees nothing: zeros
                        let e = s.map { exp($0 - m) }, total = e.reduce(0, +)
                        let p = e.map { $0 / total }
                        for j in 0..<keys {
                            for x in 0..<d { out[qi + x] += p[j] * v[(b * keys + j) * kw + g * d + x] }
                        }
                        guard let dOut else { continue }
                        let dp = (0..<keys).map { j in (0..<d).reduce(0) { $0 + dOut[qi + $1] * v[(b * keys + j) * kw + g * d + $1] } }
                        let rowDot = zip(p, dp).reduce(0) { $0 + $1.0 * $1.1 }
                        for j in 0..<keys where p[j] > 0 {
                            let kj = (b * keys + j) * kw + g * d
                            let ds = p[j] * (dp[j] - rowDot)
                            for x in 0..<d {
                                dv[kj + x] += p[j] * dOut[qi + x]
                                dq[qi + x] += scale * ds * k[kj + x]
                                dk[kj + x] += scale * ds * q[qi + x]
                            }
                        }
                    }
                }
            }
            return (out, dq, dk, dv)
        }
    }

    func testNaiveBackwardEqualsCentralFiniteDifferences() {
        let naive = NaiveSDPA(batch: 1, queries: 2, keys: 3, heads: 2, kvHeads: 1, headDim: 2, causal: true,
                              mask: [0, 0.5, -1, 0, 0, 0.25])
        let q = randomTensor([1, 2, 4], seed: 1).scalars.map(Double.init)
        let k = randomTensor([1, 3, 2], seed: 2).scalars.map(Double.init)
        let v = randomTensor([1, 3, 2], seed: 3).scalars.map(Double.init)
        let dOut = randomTensor([1, 2, 4], seed: 4).scalars.map(Double.init)
        let analytic = naive.run(q, k, v, dOut: dOut)
        func loss(_ q: [Double], _ k: [Double], _ v: [Double]) -> Double {
            zip(naive.forward(q, k, v), dOut).reduce(0) { $0 + $1.0 * $1.1 }
        }
        let h = 1e-6
        for (name, gradient, index) in [("dq", analytic.dq, 0), ("dk", analytic.dk, 1), ("dv", analytic.dv, 2)] {
            for i in gradient.indices {
                var inputs = [q, k, v], lower = [q, k, v]
                inputs[index][i] += h
                lower[index][i] -= h
                let difference = (loss(inputs[0], inputs[1], inputs[2]) - loss(lower[0], lower[1], lower[2])) / (2 * h)
                XCTAssertEqual(gradient[i], difference, accuracy: 1e-7 + 1e-6 * abs(difference), "\(name)[\(i)]")
            }
        }
    }

    func testBothKernelsMatchTheFloat64BackwardInBothLayouts() throws {
        // (batch, queries, keys, heads, kvHeads, headDim, causal, masked)
        let shapes = [(2, 7, 7, 4, 2, 8, true, false), (1, 5, 23, 6, 1, 6, true, true), (2, 23, 23, 2, 2, 5, false, true),
                      (1, 1, 113, 4, 4, 16, false, false), (1, 113, 113, 3, 1, 8, true, false)]
        for (batch, n, s, heads, kvHeads, d, causal, masked) in shapes {
            let q = randomTensor([batch, n, heads * d], seed: 11), k = randomTensor([batch, s, kvHeads * d], seed: 12)
            let v = randomTensor([batch, s, kvHeads * d], seed: 13), dOut = randomTensor([batch, n, heads * d], seed: 14)
            var maskValues: [Float]?
            if masked {
                var values = randomTensor([n, s], seed: 15, amplitude: 2).scalars
                for j in 0..<s { values[j] = -.infinity }  // query 0 sees nothing
                maskValues = values
            }
            let mask = try maskValues.map { try Tensor(shape: [n, s], scalars: $0) }
            let naive = NaiveSDPA(batch: batch, queries: n, keys: s, heads: heads, kvHeads: kvHeads, headDim: d,
                                  causal: causal, mask: maskValues?.map(Double.init))
            let expected = naive.run(q.scalars.map(Double.init), k.scalars.map(Double.init), v.scalars.map(Double.init),
                                     dOut: dOut.scalars.map(Double.init))
            for kernel in AttentionKernel.allCases {
                let name = "B \(batch), L \(n), S \(s), H \(heads)/\(kvHeads), D \(d), causal \(causal), mask \(masked), \(kernel)"
                let (out, pullback) = try scaledDotProductAttentionWithPullback(
                    queries: q, keys: k, values: v, nHeads: heads, numKVHeads: kvHeads, isCausal: causal, mask: mask,
                    kernel: kernel, workers: 2)
                let plain = try scaledDotProductAttention(queries: q, keys: k, values: v, nHeads: heads,
                                                          numKVHeads: kvHeads, isCausal: causal, mask: mask,
                                                          kernel: kernel, workers: 2)
                assertBitwiseEqual(out.scalars, plain.scalars, "\(name): output as the forward's")
                let gradients = try pullback(dOut)
                assertClose(gradients.queries.scalars, expected.dq, "\(name): dq")
                assertClose(gradients.keys.scalars, expected.dk, "\(name): dk")
                assertClose(gradients.values.scalars, expected.dv, "\(name): dv")

                // Head-major: the same gradients, transposed.
                let (_, headMajorPullback) = try scaledDotProductAttentionWithPullback(
                    queries: headMajor(q, heads: heads), keys: headMajor(k, heads: kvHeads),
                    values: headMajor(v, heads: kvHeads), nHeads: heads, numKVHeads: kvHeads, isCausal: causal,
                    mask: mask, kernel: kernel, workers: 1)
                let headMajorGradients = try headMajorPullback(headMajor(dOut, heads: heads))
                assertBitwiseEqual(headMajorGradients.queries.scalars, headMajor(gradients.queries, heads: heads).scalars,
                                   "\(name): head-major dq")
                assertBitwiseEqual(headMajorGradients.keys.scalars, headMajor(gradients.keys, heads: kvHeads).scalars,
                                   "\(name): head-major dk")
                assertBitwiseEqual(headMajorGradients.values.scalars, headMajor(gradients.values, heads: kvHeads).scalars,
                                   "\(name): head-major dv")
                XCTAssertEqual(headMajorGradients.keys.shape, [batch, kvHeads, s, d], name)
            }
        }
    }

    func testBadDOutThrows() throws {
        let q = randomTensor([1, 3, 8], seed: 1), k = randomTensor([1, 3, 8], seed: 2)
        let (_, pullback) = try scaledDotProductAttentionWithPullback(queries: q, keys: k, values: k, nHeads: 2,
                                                                      numKVHeads: 2)
        assertThrows(AttentionError.invalidInput, containing: ["dOut shape [1, 4, 8]", "must equal the shape of queries, [1, 3, 8]"],
                     "dOut too long") {
            _ = try pullback(randomTensor([1, 4, 8], seed: 3))
        }
        var bad = randomTensor([1, 3, 8], seed: 3)
        bad.scalars[9] = .nan
        assertThrows(AttentionError.invalidInput, containing: ["dOut[0, 1, 1]", "(nan)", "must be finite"], "NaN dOut") {
            _ = try pullback(bad)
        }
    }

    /// `[B, N, H·D]` → `[B, H, N, D]`.
    private func headMajor(_ tensor: Tensor, heads: Int) -> Tensor {
        let (batch, n, width) = (tensor.shape[0], tensor.shape[1], tensor.shape[2])
        let d = width / heads
        var scalars = [Float](repeating: 0, count: tensor.count)
        for b in 0..<batch {
            for i in 0..<n {
                for h in 0..<heads {
                    for x in 0..<d { scalars[((b * heads + h) * n + i) * d + x] = tensor.scalars[(b * n + i) * width + h * d + x] }
                }
            }
        }
        return try! Tensor(shape: [batch, heads, n, d], scalars: scalars)
    }
}
