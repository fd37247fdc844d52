import Foundation
import XCTest
@testable import Attention

/// The public kernel-only entry point against a float64 evaluation of its documented formula.
///
/// Tolerance: the shared ``Tolerance`` (`assertClose`), as for the layer.
final class ScaledDotProductAttentionTests: XCTestCase {
    /// `out[b,i,h] = Σ_j softmax_j(scale·q·k + mask) v`, bottom-right causal, zeros when nothing
    /// is visible.
    func naive(_ q: Tensor, _ k: Tensor, _ v: Tensor, heads: Int, kvHeads: Int, causal: Bool,
               mask: Tensor?) -> [Double] {
        let (batch, n, width) = (q.shape[0], q.shape[1], q.shape[2])
        let nk = k.shape[1], d = width / heads, kvWidth = kvHeads * d
        var out = [Double](repeating: 0, count: q.count)
        for b in 0..<batch {
            for h in 0..<heads {
                let g = h / (heads / kvHeads)
                for i in 0..<n {
                    var scores = [Double](repeating: -.infinity, count: nk)
                    for j in 0..<nk where !(causal && j > i + nk - n) {
                        var dot = 0.0
                        for e in 0..<d {
                            dot += Double(q.scalars[(b * n + i) * width + h * d + e])
                                * Double(k.scalars[(b * nk + j) * kvWidth + g * d + e])
                        }
                        var bias = 0.0
                        if let mask {
                            bias = Double(mask.rank == 2 ? mask.scalars[i * nk + j]
                                : mask.scalars[(((mask.shape[0] == 1 ? 0 : b) * mask.shape[1]
                                                 + (mask.shape[1] == 1 ? 0 : h)) * n + i) * nk + j])
                        }
                        scores[j] = dot / Double(d).squareRoot() + bias
                    }
                    let top = scores.max() ?? -.infinity
                    guard top > -.infinity else { continue }
                    let weights = scores.map { exp($0 - top) }
                    let total = weights.reduce(0, +)
                    for j in 0..<nk where weights[j] > 0 {
                        for e in 0..<d {
                            out[(b * n + i) * width + h * d + e] += weights[j] / total
                                * Double(v.scalars[(b * nk + j) * kvWidth + g * d + e])
                        }
                    }
                }
            }
        }
        return out
    }

    func testMatchesTheFormulaForQueryAndKeyLengthsThatDiffer() throws {
        for (n, nk) in [(1, 1), (1, 600), (3, 10), (10, 3), (40, 40), (17, 530)] {
            for causal in [false, true] {
                for useMask in [false, true] {
                    let (heads, kvHeads, d, batch) = (6, 2, 16, 2)
                    let q = randomTensor([batch, n, heads * d], seed: UInt64(n * 1000 + nk), amplitude: 2)
                    let k = randomTensor([batch, nk, kvHeads * d], seed: UInt64(n * 1000 + nk + 1), amplitude: 2)
                    let v = randomTensor([batch, nk, kvHeads * d], seed: UInt64(n * 1000 + nk + 2))
                    let mask = useMask ? randomTensor([batch, 1, n, nk], seed: 5, amplitude: 3) : nil
                    let expected = naive(q, k, v, heads: heads, kvHeads: kvHeads, causal: causal, mask: mask)
                    for kernel in AttentionKernel.allCases {
                        let out = try scaledDotProductAttention(queries: q, keys: k, values: v, nHeads: heads,
                                                                numKVHeads: kvHeads, isCausal: causal, mask: mask,
                                                                kernel: kernel)
                        assertClose(out.scalars, expected, "\(kernel) n \(n) nk \(nk) causal \(causal) mask \(useMask)")
                    }
                }
            }
        }
    }

    /// `[batch, outer, inner · width]` viewed as `[batch, outer, inner, width]` → `[batch, inner, outer, width]`.
    func headMajor(_ t: Tensor, heads: Int) -> Tensor {
        let (batch, length, width) = (t.shape[0], t.shape[1], t.shape[2] / heads)
        var out = [Float](repeating: 0, count: t.count)
        for b in 0..<batch {
            for i in 0..<length {
                for h in 0..<heads {
                    for e in 0..<width {
                        out[((b * heads + h) * length + i) * width + e] = t.scalars[((b * length + i) * heads + h) * width + e]
                    }
                }
            }
        }
        return try! Tensor(shape: [batch, heads, length, width], scalars: out)
    }

    func testHeadMajorLayoutsMatchTheFormula() throws {
        for (n, nk) in [(1, 1), (1, 600), (3, 10), (17, 530)] {
            for causal in [false, true] {
                let (heads, kvHeads, d, batch) = (6, 2, 16, 2)
                let q = randomTensor([batch, n, heads * d], seed: UInt64(n * 7 + nk), amplitude: 2)
                let k = randomTensor([batch, nk, kvHeads * d], seed: UInt64(n * 7 + nk + 1), amplitude: 2)
                let v = randomTensor([batch, nk, kvHeads * d], seed: UInt64(n * 7 + nk + 2))
                let mask = randomTensor([1, heads, n, nk], seed: 9, amplitude: 3)
                let expected = naive(q, k, v, heads: heads, kvHeads: kvHeads, causal: causal, mask: mask)
                let expectedHeadMajor = headMajor(try Tensor(shape: q.shape, scalars: expected.map { Float($0) }),
                                                  heads: heads).scalars.map { Double($0) }
                for headMajorQueries in [false, true] {
                    for headMajorKeys in [false, true] where headMajorQueries || headMajorKeys {
                        for kernel in AttentionKernel.allCases {
                            let out = try scaledDotProductAttention(
                                queries: headMajorQueries ? headMajor(q, heads: heads) : q,
                                keys: headMajorKeys ? headMajor(k, heads: kvHeads) : k,
                                values: headMajorKeys ? headMajor(v, heads: kvHeads) : v,
                                nHeads: heads, numKVHeads: kvHeads, isCausal: causal, mask: mask, kernel: kernel)
                            let label = "\(kernel) n \(n) nk \(nk) causal \(causal) "
                                + "queries \(headMajorQueries ? "[B,H,N,D]" : "[B,N,H·D]") "
                                + "keys \(headMajorKeys ? "[B,Hkv,N,D]" : "[B,N,Hkv·D]")"
                            XCTAssertEqual(out.shape, headMajorQueries ? [batch, heads, n, d] : q.shape, label)
                            assertClose(out.scalars, headMajorQueries ? expectedHeadMajor : expected, label)
                        }
                    }
                }
            }
        }
    }

    func testNoKeysGivesZeros() throws {
        let q = randomTensor([2, 3, 8], seed: 1)
        let empty = try Tensor(shape: [2, 0, 8], scalars: [])
        for kernel in AttentionKernel.allCases {
            let out = try scaledDotProductAttention(queries: q, keys: empty, values: empty, nHeads: 2,
                                                    numKVHeads: 2, kernel: kernel)
            XCTAssertEqual(out, Tensor(zeros: [2, 3, 8]))
        }
    }

    func testBadArgumentsThrow() throws {
        let q = randomTensor([2, 3, 8], seed: 1), k = randomTensor([2, 5, 4], seed: 2)
        func expect(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                    _ body: () throws -> Tensor) {
            assertThrows(AttentionError.invalidInput, containing: fragments, file: file, line: line, body)
        }
        for nHeads in [0, -2] {
            expect(["nHeads (\(nHeads))", "must be > 0"]) {
                try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: nHeads, numKVHeads: 1)
            }
        }
        for numKVHeads in [3, 0, -1] {
            expect(["numKVHeads (\(numKVHeads))", "must be > 0 and divide nHeads (2)"]) {
                try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: 2, numKVHeads: numKVHeads)
            }
        }
        expect(["keys shape [2, 5, 4]", "must be [2, keyLength, 8] or [2, 2, keyLength, 4]"]) {
            try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: 2, numKVHeads: 2)
        }
        expect(["values shape [2, 4, 4]", "must equal keys shape [2, 5, 4]"]) {
            try scaledDotProductAttention(queries: q, keys: k, values: randomTensor([2, 4, 4], seed: 3),
                                          nHeads: 2, numKVHeads: 1)
        }
        expect(["keys shape [2, 3, 5, 4]", "must be [2, 2, keyLength, 4]"]) {
            try scaledDotProductAttention(queries: q, keys: Tensor(zeros: [2, 3, 5, 4]),
                                          values: Tensor(zeros: [2, 3, 5, 4]), nHeads: 2, numKVHeads: 2)
        }
        expect(["queries shape [2, 3, 3, 8]", "must be [batch, nHeads, seq, headDim] with nHeads 2"]) {
            try scaledDotProductAttention(queries: Tensor(zeros: [2, 3, 3, 8]), keys: k, values: k,
                                          nHeads: 2, numKVHeads: 2)
        }
        expect(["queries shape [2, 3, 3, 8, 1]",
                "must be [batch, seq, nHeads · headDim] or [batch, nHeads, seq, headDim] with nHeads 2"]) {
            try scaledDotProductAttention(queries: Tensor(zeros: [2, 3, 3, 8, 1]), keys: k, values: k,
                                          nHeads: 2, numKVHeads: 2)
        }
        for scale: Float in [.nan, .infinity, -.infinity] {
            expect(["scale (\(scale))", "must be finite"]) {
                try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: 2, numKVHeads: 1, scale: scale)
            }
        }
        expect(["mask shape [3, 3]", "must be one of [3, 5]",
                "for batch 2, nHeads 2, queryLength 3, keyLength 5"]) {
            try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: 2, numKVHeads: 1,
                                          mask: Tensor(zeros: [3, 3]))
        }
        var badMask = Tensor(zeros: [3, 5])
        badMask.scalars[7] = .infinity
        expect(["mask element 7 (inf)", "must not be NaN or +inf"]) {
            try scaledDotProductAttention(queries: q, keys: k, values: k, nHeads: 2, numKVHeads: 1, mask: badMask)
        }
    }
}
