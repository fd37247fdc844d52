import XCTest
@testable import Attention

/// The non-finite policy: the layer rejects NaN and ±∞ at the door (in `x`, in the weights)
/// with an error naming where they are, because once inside they spread through every product
/// they meet, even `0 · NaN` for a hidden key. The kernel-only function does not scan (see its
/// documentation) but never turns a NaN into a finite number. Finite inputs so large that the
/// scores overflow give NaN outputs, never plausible numbers or zeros.
final class NonFiniteTests: XCTestCase {
    func testNaNOrInfinityInXIsRejected() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 2, useAttentionSinks: true)
        let model = try MultiHeadAttention(config: config, seed: 1)
        for bad in [Float.nan, .infinity, -.infinity] {
            var x = randomTensor([2, 6, 16], seed: 2)
            x.scalars[(1 * 6 + 3) * 16 + 5] = bad
            let fragments = ["x[1, 3, 5]", "(\(bad))", "must be finite; NaN and ±inf are rejected"]
            assertThrows(AttentionError.invalidInput, containing: fragments, "x holds \(bad)") {
                try model.forward(x)
            }
            var cache = try KVCache(config: config, batch: 2, capacity: 8)
            let before = cache
            assertThrows(AttentionError.invalidInput, containing: fragments, "x holds \(bad), with a cache") {
                try model.forward(x, cache: &cache)
            }
            XCTAssertEqual(cache, before, "nothing written")
            XCTAssertEqual(cache.lengths, [0, 0], "nothing written")
        }
        // The scan reads 16 elements at a time: a bad value in the last, partial group (36 =
        // 2 · 16 + 4 elements) and in the first element is found too.
        let narrow = try MultiHeadAttention(config: try AttentionConfig(dModel: 12, nHeads: 2), seed: 1)
        for (index, position) in [(35, "x[0, 2, 11]"), (0, "x[0, 0, 0]")] {
            for bad in [Float.nan, .infinity, -.infinity] {
                var x = randomTensor([1, 3, 12], seed: 3)
                x.scalars[index] = bad
                assertThrows(AttentionError.invalidInput, containing: [position, "(\(bad))", "must be finite"],
                             "x holds \(bad) at \(position)") {
                    try narrow.forward(x)
                }
            }
        }
    }

    func testNaNInAWeightIsRejectedAndNothingChanges() throws {
        var model = try MultiHeadAttention(config: try AttentionConfig(dModel: 16, nHeads: 2), seed: 1)
        let before = model.outProj
        var w = model.outProj
        w.scalars[2 * 16 + 7] = .nan
        assertThrows(AttentionError.invalidInput,
                     containing: ["out_proj.weight[2, 7]", "(nan)", "must be finite; NaN and ±inf are rejected"]) {
            try model.setWeight(w, for: .outProj)
        }
        XCTAssertEqual(model.outProj, before)
    }

    /// The kernel-only entry point does not scan its inputs (that would cost as much as a decode
    /// step); a NaN key must still surface as NaN in the rows that see it, never as zeros.
    func testNaNKernelInputsSurfaceAsNaN() throws {
        let q = randomTensor([1, 3, 8], seed: 1)
        var k = randomTensor([1, 3, 8], seed: 2)
        k.scalars[1] = .nan  // key 0, key/value head 0 (elements 0..<4)
        for kernel in AttentionKernel.allCases {
            let out = try scaledDotProductAttention(queries: q, keys: k, values: q, nHeads: 2, numKVHeads: 2,
                                                    isCausal: true, kernel: kernel)
            for i in 0..<3 {
                XCTAssertTrue(out.scalars[(i * 8)..<(i * 8 + 4)].allSatisfy { $0.isNaN }, "\(kernel): row \(i), head 0")
                XCTAssertTrue(out.scalars[(i * 8 + 4)..<(i * 8 + 8)].allSatisfy { $0.isFinite }, "\(kernel): row \(i), head 1")
            }
        }
    }

    /// Scores of +∞ (finite 1e20 queries and keys overflow the dot product) must surface as NaN
    /// in both kernels, not be mistaken for "no visible key" and turned into zeros.
    func testOverflowingScoresGiveNaNNotZeros() throws {
        let big = try Tensor(shape: [1, 4, 8], scalars: Array(repeating: 1e20, count: 32))
        let values = randomTensor([1, 4, 8], seed: 3)
        for kernel in AttentionKernel.allCases {
            let out = try scaledDotProductAttention(queries: big, keys: big, values: values, nHeads: 2,
                                                    numKVHeads: 2, kernel: kernel)
            XCTAssertTrue(out.scalars.allSatisfy { $0.isNaN }, "\(kernel): \(out.scalars.prefix(8))")
        }
    }
}
