import XCTest
@testable import Attention

/// Invariants of DESIGN.md §3, each proved by two computations that must agree (or, where the
/// claim is statistical, by a bound stated next to the check).
///
/// Tolerances, stated once and repeated where used:
/// - "shared": ``Tolerance`` via `assertClose`, max |a − b| ≤ max(1e-5, 1e-5 · max |b|), NaN and
///   ±∞ never pass. Two fp32 paths that do the same math in a different order (different sgemm
///   sizes, permuted dot products) differ by ~1e-6 relative; a semantic slip (wrong position,
///   wrong kv head, hidden sink) moves outputs by 1e-2 or more.
/// - "bitwise": `assertBitwiseEqual`, `==` on every `Float` (so +0 equals −0; NaN never equals).
///
/// Every equivalence is paired with a "the test can fail" check: the naive alternative (no
/// permutation, tiled heads, no mask, other seed) is shown to differ by far more than the tolerance.
final class InvariantTests: XCTestCase {
    /// Two results count as "different" when they differ by more than this relative to
    /// max(1, max |b|): 100× the shared tolerance, so a passing equality and a passing
    /// difference cannot both be noise. A NaN or ±∞ on either side fails, never counts as a difference.
    static let distinct: Float = 1e-3

    // MARK: - 1. RoPE

    /// RoPE preserves each pair's norm: both pairings, ropeScaling nil / 0.25 / 3, padded rows
    /// (row stride wider than the heads) over two batch rows.
    /// Tolerance: |‖pair′‖ − ‖pair‖| ≤ 1e-5 · max(1, ‖pair‖) (a·c − b·s rounds to a few ulp).
    func testRoPEPreservesEachPairsNorm() {
        let headDim = 8, heads = 3, seq = 5, batch = 2, first = 3, padding = 2
        let rowStride = heads * headDim + padding
        for pairing in RoPEPairing.allCases {
            for scaling in [nil, 0.25, 3] as [Float?] {
                let label = "pairing \(pairing), ropeScaling \(String(describing: scaling))"
                let rope = RotaryEmbedding(headDim: headDim, theta: 10000, scaling: scaling, pairing: pairing)
                let original = Fixture.tensor([batch * seq, rowStride], seed: 11, amplitude: 2).scalars
                var rotated = original
                rope.apply(to: &rotated, rows: batch * seq, rowStride: rowStride, headCount: heads,
                           sequenceLength: seq, firstPosition: first)
                XCTAssertNotEqual(rotated, original, "\(label): RoPE must move something")
                for r in 0..<batch * seq {
                    for c in heads * headDim..<rowStride {
                        XCTAssertEqual(rotated[r * rowStride + c], original[r * rowStride + c],
                                       "\(label): padding column \(c) of row \(r) must stay untouched")
                    }
                    for head in 0..<heads {
                        for (i, (ia, ib)) in Fixture.ropePairs(headDim: headDim, pairing: pairing).enumerated() {
                            let base = r * rowStride + head * headDim
                            let before = hypot(Double(original[base + ia]), Double(original[base + ib]))
                            let after = hypot(Double(rotated[base + ia]), Double(rotated[base + ib]))
                            XCTAssertEqual(after, before, accuracy: 1e-5 * max(1, before),
                                           "\(label): row \(r), head \(head), pair \(i) (\(ia), \(ib))")
                        }
                    }
                }
            }
        }
    }

    /// RoPE rotates pair `i` at position `p` by exactly `p · ropeTheta^(−2i/D) · (ropeScaling ?? 1)`
    /// (so a no-op or a wrong frequency cannot pass the norm test above alone). Row `r` of a
    /// `[batch, seq]` buffer sits at `firstPosition + r % seq`.
    /// Tolerance: 1e-4 rad on the recovered angle for pairs of norm ≥ 0.25 (cos/sin are rounded
    /// to fp32 once, ~1e-7; the rotation then rounds a few ulp).
    func testRoPERotatesEachPairByPositionTimesScaledFrequency() {
        let headDim = 8, seq = 6, batch = 2, first = 4, theta: Float = 500
        for pairing in RoPEPairing.allCases {
            for scaling in [nil, 0.25] as [Float?] {
                let rope = RotaryEmbedding(headDim: headDim, theta: theta, scaling: scaling, pairing: pairing)
                let original = Fixture.tensor([batch * seq, headDim], seed: 12, amplitude: 2).scalars
                var rotated = original
                rope.apply(to: &rotated, rows: batch * seq, rowStride: headDim, headCount: 1,
                           sequenceLength: seq, firstPosition: first)
                for r in 0..<batch * seq {
                    let position = Double(first + r % seq)
                    for (i, (ia, ib)) in Fixture.ropePairs(headDim: headDim, pairing: pairing).enumerated() {
                        let a = Double(original[r * headDim + ia]), b = Double(original[r * headDim + ib])
                        guard hypot(a, b) >= 0.25 else { continue }
                        let a2 = Double(rotated[r * headDim + ia]), b2 = Double(rotated[r * headDim + ib])
                        let measured = atan2(b2, a2) - atan2(b, a)
                        let frequency = pow(Double(theta), -2 * Double(i) / Double(headDim)) * Double(scaling ?? 1)
                        let expected = position * frequency
                        // Compare on the circle: the difference of the two angles, wrapped to (−π, π].
                        let wrapped = remainder(measured - expected, 2 * .pi)
                        XCTAssertEqual(wrapped, 0, accuracy: 1e-4,
                                       "pairing \(pairing), scaling \(String(describing: scaling)), row \(r), pair \(i)")
                    }
                }
            }
        }
    }

    /// q·k after RoPE depends only on the position difference: q at p+δ and k at p′+δ give the
    /// same dot product for every shift δ (up to 1000), both pairings, with and without scaling.
    /// Tolerance: |Δ(q·k)| ≤ 1e-5 · ‖q‖·‖k‖ (each rotated element rounds a few ulp).
    /// Can fail: the dot product does change with the difference p − p′ (checked below).
    func testRoPEDotProductDependsOnlyOnPositionDifference() {
        let headDim = 16
        let q = Fixture.tensor([headDim], seed: 21).scalars
        let k = Fixture.tensor([headDim], seed: 22).scalars
        let bound = 1e-5 * Fixture.norm(q) * Fixture.norm(k)
        for pairing in RoPEPairing.allCases {
            for scaling in [nil, 0.25] as [Float?] {
                let label = "pairing \(pairing), ropeScaling \(String(describing: scaling))"
                let rope = RotaryEmbedding(headDim: headDim, theta: 10000, scaling: scaling, pairing: pairing)
                func rotatedDot(_ p: Int, _ pk: Int) -> Double {
                    var qr = q, kr = k
                    rope.apply(to: &qr, rows: 1, rowStride: headDim, headCount: 1, sequenceLength: 1, firstPosition: p)
                    rope.apply(to: &kr, rows: 1, rowStride: headDim, headCount: 1, sequenceLength: 1, firstPosition: pk)
                    return zip(qr, kr).reduce(0) { $0 + Double($1.0) * Double($1.1) }
                }
                for (p, pk) in [(0, 0), (3, 7), (12, 2), (5, 0)] {
                    let base = rotatedDot(p, pk)
                    for delta in [1, 2, 5, 17, 100, 1000] {
                        XCTAssertEqual(rotatedDot(p + delta, pk + delta), base, accuracy: bound,
                                       "\(label): q at \(p)+\(delta), k at \(pk)+\(delta)")
                    }
                }
                XCTAssertGreaterThan(abs(rotatedDot(0, 0) - rotatedDot(0, 3)), 100 * bound,
                                     "\(label): q·k must depend on the position difference")
            }
        }
    }

    // MARK: - 2. Pairings

    /// `.halfSplit` equals `.interleaved` once q_proj and k_proj rows are permuted within each head
    /// (interleaved element 2i ↔ halfSplit i, 2i+1 ↔ i + D/2). The permutation maps each
    /// interleaved pair onto the halfSplit pair of the same frequency, so RoPE commutes with it and
    /// q·k is unchanged. Covers GQA and sinks (sink keys go through the same k_proj).
    /// Tolerance: shared (1e-5 relative). Can fail: without the permutation outputs differ.
    func testHalfSplitEqualsInterleavedUnderHeadDimensionPermutation() throws {
        let n = 7, batch = 2
        for (nHeads, kvHeads, sinks) in [(4, 4, 0), (4, 2, 2)] {
            let dModel = 8 * nHeads
            func config(_ pairing: RoPEPairing) throws -> AttentionConfig {
                try AttentionConfig(dModel: dModel, nHeads: nHeads, ropePairing: pairing,
                                    useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
                                    useGQA: kvHeads != nHeads, gqaGroups: kvHeads)
            }
            let interleaved = try Fixture.model(config(.interleaved), seed: 31)
            var halfSplit = try MultiHeadAttention(config: config(.halfSplit), seed: 999)
            try Fixture.copyWeights(from: interleaved, into: &halfSplit)
            let unpermuted = halfSplit
            let headDim = interleaved.headDim
            try halfSplit.setWeight(Fixture.permuteInterleavedToHalfSplit(interleaved.qProj, headDim: headDim), for: .qProj)
            try halfSplit.setWeight(Fixture.permuteInterleavedToHalfSplit(interleaved.kProj, headDim: headDim), for: .kProj)

            let x = Fixture.tensor([batch, n, dModel], seed: 32, amplitude: 2)
            for kernel in AttentionKernel.allCases {
                let label = "heads \(nHeads)/\(kvHeads), sinks \(sinks), kernel \(kernel)"
                let expected = try Fixture.run(interleaved, x, kernel: kernel).scalars
                assertClose(try Fixture.run(halfSplit, x, kernel: kernel).scalars, expected, label)
                Fixture.assertDiffer(try Fixture.run(unpermuted, x, kernel: kernel).scalars, expected,
                                     relative: Self.distinct, "\(label): unpermuted halfSplit")
            }
        }
    }

    // MARK: - 3. GQA

    /// GQA equals MHA whose k_proj / v_proj repeat each kv head's rows for its consecutive group:
    /// query head h reads kv head h / (nHeads / numKVHeads) (`repeat_interleave`, never tiled).
    /// Ratios 8/2, 6/1 and 6/3, with and without sinks, RoPE on, causal.
    /// Tolerance: shared (1e-5 relative; same dot products, different sgemm shapes).
    /// Can fail: the tiled repetition (head h → kv head h % numKVHeads) differs.
    func testGQAEqualsMHAWithRepeatedKVWeights() throws {
        let n = 6, batch = 2, headDim = 4
        for (nHeads, kvHeads, sinks) in [(8, 2, 0), (6, 1, 0), (6, 3, 2), (8, 2, 3)] {
            let dModel = headDim * nHeads
            let gqaConfig = try AttentionConfig(dModel: dModel, nHeads: nHeads,
                                                useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
                                                useGQA: true, gqaGroups: kvHeads)
            let mhaConfig = try AttentionConfig(dModel: dModel, nHeads: nHeads,
                                                useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1))
            let gqa = try Fixture.model(gqaConfig, seed: 41)
            XCTAssertEqual(gqa.kProj.shape, [kvHeads * headDim, dModel])
            let group = nHeads / kvHeads

            func mha(kvHeadOf: (Int) -> Int) throws -> MultiHeadAttention {
                var model = try MultiHeadAttention(config: mhaConfig, seed: 777)
                try Fixture.copyWeights(from: gqa, into: &model, skipping: [.kProj, .vProj])
                for parameter in [AttentionParameter.kProj, .vProj] {
                    let source = gqa.weight(parameter)!
                    var scalars: [Float] = []
                    for h in 0..<nHeads {
                        let rows = kvHeadOf(h) * headDim..<(kvHeadOf(h) + 1) * headDim
                        scalars += source.scalars[rows.lowerBound * dModel..<rows.upperBound * dModel]
                    }
                    try model.setWeight(Tensor(shape: [nHeads * headDim, dModel], scalars: scalars), for: parameter)
                }
                return model
            }
            let repeated = try mha { $0 / group }
            let tiled = try mha { $0 % kvHeads }

            let x = Fixture.tensor([batch, n, dModel], seed: 42, amplitude: 2)
            for kernel in AttentionKernel.allCases {
                let label = "heads \(nHeads)/\(kvHeads), sinks \(sinks), kernel \(kernel)"
                let expected = try Fixture.run(repeated, x, kernel: kernel).scalars
                let actual = try Fixture.run(gqa, x, kernel: kernel).scalars
                assertClose(actual, expected, label)
                if kvHeads > 1 && group > 1 {
                    Fixture.assertDiffer(actual, try Fixture.run(tiled, x, kernel: kernel).scalars,
                                         relative: Self.distinct, "\(label): tiled mapping")
                }
            }
        }
    }

    // MARK: - 4. Sinks

    /// Sinks equal prepending `sinkStates` as S extra tokens and dropping their output rows, with
    /// causal on and off. In the sink-free model on `[sinkStates; x]` token t sits at position
    /// S + t and the sink rows at 0..<S, as DESIGN.md §3 places them; under causal the sink rows
    /// precede every token, so they are visible to every token query, as sinks must be. Sink rows'
    /// own queries are dropped. Includes GQA and both pairings.
    /// Tolerance: shared (1e-5 relative; different sgemm sizes).
    /// Can fail: the rows differ from the sink-free model on x alone.
    func testSinksEqualPrependedTokensWithTheirRowsDropped() throws {
        let n = 5, batch = 2, sinks = 3
        for causal in [true, false] {
            for (nHeads, kvHeads, pairing) in [(2, 2, RoPEPairing.halfSplit), (4, 2, .interleaved)] {
                let dModel = 4 * nHeads
                let withSinks = try Fixture.model(AttentionConfig(
                    dModel: dModel, nHeads: nHeads, ropePairing: pairing, useAttentionSinks: true,
                    numAttentionSinks: sinks, useGQA: kvHeads != nHeads, gqaGroups: kvHeads, isCausal: causal),
                    seed: 51)
                var plain = try MultiHeadAttention(config: AttentionConfig(
                    dModel: dModel, nHeads: nHeads, ropePairing: pairing,
                    useGQA: kvHeads != nHeads, gqaGroups: kvHeads, isCausal: causal), seed: 888)
                try Fixture.copyWeights(from: withSinks, into: &plain)

                let x = Fixture.tensor([batch, n, dModel], seed: 52, amplitude: 2)
                let sinkRows = withSinks.sinkStates!.scalars
                var concatenated: [Float] = []
                for b in 0..<batch { concatenated += sinkRows + Fixture.rows(x, batch: b, 0..<n) }
                let xWithSinkTokens = try Tensor(shape: [batch, sinks + n, dModel], scalars: concatenated)

                for kernel in AttentionKernel.allCases {
                    let label = "causal \(causal), heads \(nHeads)/\(kvHeads), \(pairing), kernel \(kernel)"
                    let actual = try Fixture.run(withSinks, x, kernel: kernel)
                    let long = try Fixture.run(plain, xWithSinkTokens, kernel: kernel)
                    let expected = (0..<batch).flatMap { Fixture.rows(long, batch: $0, sinks..<sinks + n) }
                    assertClose(actual.scalars, expected, label)
                    Fixture.assertDiffer(actual.scalars, try Fixture.run(plain, x, kernel: kernel).scalars,
                                         relative: Self.distinct, "\(label): sink-free model on x")
                }
            }
        }
    }

    // MARK: - 5. Causality

    /// A causal output row does not change when later tokens change: rows 0..<c are bitwise equal
    /// (`==`) after tokens c..<N of every batch row are replaced. Row i reads keys/values 0...i and
    /// the sinks only; hidden scores are −∞, so exp gives exact zeros and 0·v adds nothing.
    /// Can fail: rows from c on do change.
    func testCausalRowIgnoresLaterTokens() throws {
        let n = 9, batch = 2, dModel = 16, cut = 4
        for sinks in [0, 2] {
            let model = try Fixture.model(AttentionConfig(
                dModel: dModel, nHeads: 4, useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
                useGQA: true, gqaGroups: 2), seed: 61)
            let x = Fixture.tensor([batch, n, dModel], seed: 62, amplitude: 2)
            let replacement = Fixture.tensor([batch, n, dModel], seed: 63, amplitude: 2)
            var changed = x.scalars
            for b in 0..<batch {
                let range = (b * n + cut) * dModel..<(b * n + n) * dModel
                changed.replaceSubrange(range, with: replacement.scalars[range])
            }
            let xChanged = try Tensor(shape: x.shape, scalars: changed)
            for kernel in AttentionKernel.allCases {
                let label = "sinks \(sinks), kernel \(kernel)"
                let before = try Fixture.run(model, x, kernel: kernel)
                let after = try Fixture.run(model, xChanged, kernel: kernel)
                for b in 0..<batch {
                    assertBitwiseEqual(Fixture.rows(after, batch: b, 0..<cut), Fixture.rows(before, batch: b, 0..<cut),
                                       "\(label): batch \(b), rows before \(cut) must be unchanged")
                    Fixture.assertDiffer(Fixture.rows(after, batch: b, cut..<n), Fixture.rows(before, batch: b, cut..<n),
                                         relative: Self.distinct, "\(label): batch \(b), rows from \(cut)")
                }
            }
        }
    }

    // MARK: - 6. Masks

    /// A −∞ mask column equals deleting that key. Deleting a token shifts the positions of every
    /// later token, and RoPE scores depend on position differences, so with RoPE on the deleted
    /// run is a different problem — except when the deleted key is the last token (no position
    /// moves). Part 1: useRoPE false, causal off and on, sinks off and on, a `[B,1,N,N]` mask
    /// deleting a different key per batch row (first, middle, and last when causal is off).
    /// Part 2: RoPE on, causal
    /// off, delete the last key. The deleted token's own query row is not compared.
    /// Tolerance: shared (1e-5 relative; the deleted run has different sgemm sizes).
    /// Can fail: without the mask the rows differ.
    func testMinusInfinityMaskColumnEqualsDeletingThatKey() throws {
        let n = 7, dModel = 16
        func check(_ model: MultiHeadAttention, deleted: [Int], label: String) throws {
            let batch = deleted.count
            let x = Fixture.tensor([batch, n, dModel], seed: 72, amplitude: 2)
            var maskScalars = [Float](repeating: 0, count: batch * n * n)
            for (b, k) in deleted.enumerated() {
                for i in 0..<n { maskScalars[(b * n + i) * n + k] = -.infinity }
            }
            let mask = try Tensor(shape: [batch, 1, n, n], scalars: maskScalars)
            for kernel in AttentionKernel.allCases {
                let masked = try Fixture.run(model, x, mask: mask, kernel: kernel)
                let unmasked = try Fixture.run(model, x, kernel: kernel)
                for (b, k) in deleted.enumerated() {
                    let kept = (0..<n).filter { $0 != k }
                    let shortX = try Tensor(shape: [1, n - 1, dModel],
                                            scalars: kept.flatMap { Fixture.rows(x, batch: b, $0..<$0 + 1) })
                    let short = try Fixture.run(model, shortX, kernel: kernel)
                    // Kept token i is row i of the masked run and row kept.firstIndex(of: i) of the short run.
                    let actual = kept.flatMap { Fixture.rows(masked, batch: b, $0..<$0 + 1) }
                    let expected = Fixture.rows(short, batch: 0, 0..<n - 1)
                    let rowLabel = "\(label), kernel \(kernel), batch \(b), deleted key \(k)"
                    assertClose(actual, expected, rowLabel)
                    // Under causal, rows before k never saw key k; compare the rows that did.
                    let affected = kept.filter { !model.config.isCausal || $0 > k }
                    if !affected.isEmpty {
                        Fixture.assertDiffer(affected.flatMap { Fixture.rows(masked, batch: b, $0..<$0 + 1) },
                                             affected.flatMap { Fixture.rows(unmasked, batch: b, $0..<$0 + 1) },
                                             relative: Self.distinct, "\(rowLabel): unmasked")
                    }
                }
            }
        }
        for causal in [false, true] {
            for sinks in [0, 2] {
                let model = try Fixture.model(AttentionConfig(
                    dModel: dModel, nHeads: 2, useRoPE: false, useAttentionSinks: sinks > 0,
                    numAttentionSinks: max(sinks, 1), isCausal: causal), seed: 71)
                // Under causal the last key is seen only by its own row: delete key 0 and 3 instead.
                try check(model, deleted: causal ? [0, 3] : [0, 3, n - 1],
                          label: "no RoPE, causal \(causal), sinks \(sinks)")
            }
        }
        for sinks in [0, 2] {
            let model = try Fixture.model(AttentionConfig(
                dModel: dModel, nHeads: 2, useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
                isCausal: false), seed: 73)
            try check(model, deleted: [n - 1, n - 1], label: "RoPE, last key, sinks \(sinks)")
        }
    }

    /// A fully masked row gives zeros: a `[N,N]` mask row of −∞ without sinks, and a `[N,S+N]`
    /// mask row of −∞ (hiding the sinks too) with sinks, give an output row of exact zeros
    /// (bitwise `== 0`), causal on and off; every other row stays finite and non-zero.
    func testFullyMaskedRowGivesZeros() throws {
        let n = 6, batch = 2, dModel = 16, hiddenRows = [0, 3]
        for causal in [true, false] {
            for sinks in [0, 2] {
                let model = try Fixture.model(AttentionConfig(
                    dModel: dModel, nHeads: 4, useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
                    useGQA: true, gqaGroups: 2, isCausal: causal), seed: 81)
                let width = sinks + n
                var maskScalars = [Float](repeating: 0, count: n * width)
                for r in hiddenRows { for c in 0..<width { maskScalars[r * width + c] = -.infinity } }
                let mask = try Tensor(shape: [n, width], scalars: maskScalars)
                let x = Fixture.tensor([batch, n, dModel], seed: 82, amplitude: 2)
                for kernel in AttentionKernel.allCases {
                    let label = "causal \(causal), sinks \(sinks), kernel \(kernel)"
                    let output = try Fixture.run(model, x, mask: mask, kernel: kernel)
                    for b in 0..<batch {
                        for r in 0..<n {
                            let row = Fixture.rows(output, batch: b, r..<r + 1)
                            if hiddenRows.contains(r) {
                                XCTAssertTrue(row.allSatisfy { $0 == 0 }, "\(label): batch \(b), row \(r) must be zeros: \(row)")
                            } else {
                                XCTAssertTrue(row.allSatisfy(\.isFinite), "\(label): batch \(b), row \(r) not finite")
                                XCTAssertTrue(row.contains { $0 != 0 }, "\(label): batch \(b), row \(r) is zeros")
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: - 8–10. Dropout and seeds

    /// Training with dropout 0 equals eval, bitwise (`==`): no mask is drawn, whatever the seed.
    /// And a layer with dropout 0.3 run with `training: false` equals the dropout-0 layer with the
    /// same weights in eval, bitwise, for any dropoutSeed. Can fail: training with 0.3 differs.
    func testTrainingWithZeroDropoutEqualsEval() throws {
        let n = 6, batch = 2, dModel = 16
        let zeroConfig = try AttentionConfig(dModel: dModel, nHeads: 4, useAttentionSinks: true,
                                             numAttentionSinks: 2, dropout: 0)
        let dropConfig = try AttentionConfig(dModel: dModel, nHeads: 4, useAttentionSinks: true,
                                             numAttentionSinks: 2, dropout: 0.3)
        let zero = try Fixture.model(zeroConfig, seed: 91)
        var drop = try MultiHeadAttention(config: dropConfig, seed: 12345)
        try Fixture.copyWeights(from: zero, into: &drop)
        let x = Fixture.tensor([batch, n, dModel], seed: 92, amplitude: 2)
        for kernel in AttentionKernel.allCases {
            let eval = try Fixture.run(zero, x, kernel: kernel).scalars
            for seed in [nil, 0, 42] as [UInt64?] {
                let label = "kernel \(kernel), seed \(String(describing: seed))"
                assertBitwiseEqual(try Fixture.run(zero, x, kernel: kernel, training: true, seed: seed).scalars,
                                   eval, "\(label): dropout 0, training")
                assertBitwiseEqual(try Fixture.run(drop, x, kernel: kernel, training: false, seed: seed).scalars,
                                   eval, "\(label): dropout 0.3, training false")
            }
            Fixture.assertDiffer(try Fixture.run(drop, x, kernel: kernel, training: true, seed: 42).scalars, eval,
                                 relative: Self.distinct, "kernel \(kernel): dropout 0.3, training true")
        }
        // The convenience overload agrees too.
        assertBitwiseEqual(try zero.forward(x, training: true).scalars, try zero.forward(x).scalars,
                           "forward(_:mask:training:) with dropout 0")
    }

    /// Dropout p keeps ≈ 1 − p of the weights and scales survivors by 1/(1 − p), checked on
    /// `DropoutMask` directly over 4·8·64·64 = 131 072 (b, h, i, j) draws per p:
    /// - every factor is exactly 0 or keepScale = 1/(1 − p);
    /// - the kept fraction is within 5σ of 1 − p, σ = √(p(1−p)/n) (≈ 0.0014 at p = 0.5);
    /// - neighbouring keys are independent: P(keep j and j+1) within 5σ of (1 − p)²;
    /// - another seed gives another mask (agreement within 5σ of p² + (1−p)², far from 1).
    func testDropoutMaskKeepsOneMinusPWithInverseScaling() {
        let batches = 4, heads = 8, positions = 64
        for p: Float in [0.1, 0.5, 0.8] {
            let mask = DropoutMask(probability: p, seed: 2024)
            let other = DropoutMask(probability: p, seed: 2025)
            XCTAssertEqual(mask.keepScale, 1 / (1 - p), "p \(p)")
            var kept = 0, keptPairs = 0, pairs = 0, agree = 0, total = 0
            var badFactors: [Float] = []
            for b in 0..<batches {
                for h in 0..<heads {
                    for i in 0..<positions {
                        let rowKey = mask.rowKey(batch: b, head: h, queryPosition: i)
                        let otherKey = other.rowKey(batch: b, head: h, queryPosition: i)
                        var previousKept = false
                        for j in 0..<positions {
                            let factor = mask.factor(rowKey: rowKey, keyPosition: j)
                            if factor != 0 && factor != mask.keepScale { badFactors.append(factor) }
                            let isKept = factor != 0
                            kept += isKept ? 1 : 0
                            total += 1
                            if j > 0 {
                                pairs += 1
                                keptPairs += isKept && previousKept ? 1 : 0
                            }
                            previousKept = isKept
                            agree += isKept == (other.factor(rowKey: otherKey, keyPosition: j) != 0) ? 1 : 0
                        }
                    }
                }
            }
            XCTAssertEqual(badFactors.prefix(5), [], "p \(p): factors must be 0 or keepScale")
            func assertFraction(_ count: Int, of n: Int, near q: Double, _ what: String) {
                let sigma = (q * (1 - q) / Double(n)).squareRoot()
                XCTAssertEqual(Double(count) / Double(n), q, accuracy: 5 * sigma, "p \(p): \(what)")
            }
            let keep = 1 - Double(p)
            assertFraction(kept, of: total, near: keep, "kept fraction")
            assertFraction(keptPairs, of: pairs, near: keep * keep, "neighbouring keys both kept")
            assertFraction(agree, of: total, near: keep * keep + Double(p) * Double(p), "agreement with seed 2025")
        }
    }

    /// At the model level, training applies exactly the `DropoutMask` factors keyed by
    /// (seed, b, h, position(i), position(j)) to the attention probabilities, and the mean over
    /// many seeds converges to eval. Setup: useRoPE false, causal off, 2 heads, S = 2 sinks,
    /// q_proj = k_proj = 0 (every probability is 1/K over the K = S + N keys), v_proj = out_proj = I
    /// (output element c of row i = Σ_j P_ij · value_j[c], head c / headDim, values
    /// `[sinkStates; x]`). Positions: sinks 0..<S, token t at S + t, for queries and keys.
    /// - exact: training row i = Σ_j (1/K)·f(b, h, S+i, pos j)·value_j for f from `DropoutMask`;
    ///   tolerance 1e-6 absolute (|values| ≤ 1, K = 10 terms);
    /// - mean of M = 3000 seeds vs eval: per element within 5σ/√M, σ² = Σ_j value_j² · p/(1−p) / K².
    func testDropoutMeanOfTrainingOutputsApproachesEval() throws {
        let n = 8, sinks = 2, dModel = 8, nHeads = 2, batch = 2, samples = 3000
        let keys = sinks + n, headDim = dModel / nHeads
        for p: Float in [0.25, 0.5] {
            let config = try AttentionConfig(dModel: dModel, nHeads: nHeads, useRoPE: false, useAttentionSinks: true,
                                             numAttentionSinks: sinks, dropout: p, isCausal: false)
            var model = try Fixture.model(config, seed: 1)
            let zeros = Tensor(zeros: [dModel, dModel])
            var identity = zeros
            for i in 0..<dModel { identity.scalars[i * dModel + i] = 1 }
            try model.setWeight(zeros, for: .qProj)
            try model.setWeight(zeros, for: .kProj)
            try model.setWeight(identity, for: .vProj)
            try model.setWeight(identity, for: .outProj)
            let x = Fixture.tensor([batch, n, dModel], seed: 101)
            // values[b][j]: key j of batch row b in key order [sinks ; tokens].
            let values: [[[Float]]] = (0..<batch).map { b in
                (0..<sinks).map { Array(model.sinkStates!.scalars[$0 * dModel..<($0 + 1) * dModel]) }
                    + (0..<n).map { Fixture.rows(x, batch: b, $0..<$0 + 1) }
            }
            let eval = try Fixture.run(model, x, kernel: nil).scalars

            // Eval is the plain mean of the batch row's keys' values.
            for b in 0..<batch {
                for c in 0..<dModel {
                    let mean = values[b].reduce(0.0) { $0 + Double($1[c]) } / Double(keys)
                    XCTAssertEqual(Double(eval[b * n * dModel + c]), mean, accuracy: 1e-6, "p \(p): eval row 0, batch \(b)")
                }
            }

            for kernel in AttentionKernel.allCases {
                for seed: UInt64 in [7, 8] {
                    let output = try Fixture.run(model, x, kernel: kernel, training: true, seed: seed).scalars
                    let dropout = DropoutMask(probability: p, seed: seed)
                    var expected = [Float](repeating: 0, count: output.count)
                    for b in 0..<batch {
                        for i in 0..<n {
                            for c in 0..<dModel {
                                let rowKey = dropout.rowKey(batch: b, head: c / headDim, queryPosition: sinks + i)
                                for j in 0..<keys {
                                    let weight = dropout.factor(rowKey: rowKey, keyPosition: j) / Float(keys)
                                    expected[(b * n + i) * dModel + c] += weight * values[b][j][c]
                                }
                            }
                        }
                    }
                    // The shared comparison, under a tighter bound of its own (1e-6 absolute).
                    let comparison = Comparison(output, expected)
                    XCTAssertTrue(comparison.countMismatch == nil && comparison.nonFiniteMismatches == 0
                                      && comparison.maxError <= 1e-6,
                                  "p \(p), kernel \(kernel), seed \(seed): training ≠ Σ f·v/K: \(comparison)")
                }
            }

            var sum = [Double](repeating: 0, count: eval.count)
            for seed in 0..<UInt64(samples) {
                let output = try Fixture.run(model, x, kernel: nil, training: true, seed: 10_000 + seed).scalars
                for (e, value) in output.enumerated() { sum[e] += Double(value) }
            }
            let variance = Double(p) / (1 - Double(p))
            for b in 0..<batch {
                for c in 0..<dModel {
                    let sumSquares = values[b].reduce(0.0) { $0 + Double($1[c]) * Double($1[c]) }
                    let sigma = (sumSquares * variance).squareRoot() / Double(keys)
                    for i in 0..<n {
                        let e = (b * n + i) * dModel + c
                        XCTAssertEqual(sum[e] / Double(samples), Double(eval[e]),
                                       accuracy: 5 * sigma / Double(samples).squareRoot(),
                                       "p \(p): mean of \(samples) training outputs, batch \(b), row \(i), column \(c)")
                    }
                }
            }
        }
    }

    /// Same seed → same bits: training forward with dropoutSeed 42 twice is bitwise equal (`==`);
    /// seed 43 differs. Construction with the same seed gives bitwise-equal weights (both
    /// initialisations); another seed changes every parameter.
    func testSameSeedGivesSameBits() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 2, dropout: 0.3)
        let model = try Fixture.model(config, seed: 111)
        let x = Fixture.tensor([2, 6, 16], seed: 112, amplitude: 2)
        let first = try model.forward(x, mask: nil, training: true, dropoutSeed: 42, kernel: nil)
        let second = try model.forward(x, mask: nil, training: true, dropoutSeed: 42, kernel: nil)
        assertBitwiseEqual(first.scalars, second.scalars, "same dropoutSeed")
        let other = try model.forward(x, mask: nil, training: true, dropoutSeed: 43, kernel: nil)
        Fixture.assertDiffer(other.scalars, first.scalars, relative: Self.distinct, "dropoutSeed 43 vs 42")

        for initialization in [WeightInitialization.pytorchDefault, .orthogonal()] {
            let a = try MultiHeadAttention(config: config, seed: 5, weightInitialization: initialization)
            let b = try MultiHeadAttention(config: config, seed: 5, weightInitialization: initialization)
            let c = try MultiHeadAttention(config: config, seed: 6, weightInitialization: initialization)
            for parameter in AttentionParameter.allCases {
                let label = "\(initialization), \(parameter.stateDictName)"
                assertBitwiseEqual(a.weight(parameter)!.scalars, b.weight(parameter)!.scalars, "\(label): same seed")
                XCTAssertNotEqual(a.weight(parameter)!.scalars, c.weight(parameter)!.scalars, "\(label): seed 6 vs 5")
            }
        }
    }

    /// Orthogonal initialisation gives W·Wᵀ = gain²·I for the square q_proj / out_proj and for the
    /// wide `[numKVHeads·headDim, dModel]` k_proj / v_proj (rows orthonormal), gain 1 and 2.
    /// Tolerance: 1e-5 · gain² absolute per entry of W·Wᵀ (fp32 QR of a 32-wide matrix: ~1e-6).
    func testOrthogonalInitialisationHasOrthonormalRows() throws {
        let config = try AttentionConfig(dModel: 32, nHeads: 4, useGQA: true, gqaGroups: 2)
        for gain: Float in [1, 2] {
            let model = try MultiHeadAttention(config: config, seed: 121, weightInitialization: .orthogonal(gain: gain))
            XCTAssertEqual(model.kProj.shape, [16, 32])
            for parameter in [AttentionParameter.qProj, .kProj, .vProj, .outProj] {
                let w = model.weight(parameter)!
                let rows = w.shape[0], columns = w.shape[1]
                var worst = 0.0
                for r in 0..<rows {
                    for s in 0..<rows {
                        var dot = 0.0
                        for c in 0..<columns {
                            dot += Double(w.scalars[r * columns + c]) * Double(w.scalars[s * columns + c])
                        }
                        let target = r == s ? Double(gain * gain) : 0
                        let error = abs(dot - target)
                        if !(error <= worst) { worst = error }
                    }
                }
                XCTAssertLessThanOrEqual(worst, 1e-5 * Double(gain * gain),
                                         "gain \(gain), \(parameter.stateDictName) \(w.shape): max |W·Wᵀ − gain²·I|")
            }
        }
    }

    // MARK: - 11. Sinks under masks

    /// The sink is visible under the causal mask: the first token's output with sinks differs from
    /// the same layer without sinks (row 0 without sinks is exactly out(v₀), whatever its position).
    /// A `[N,N]` mask hiding every token key still leaves the sinks visible: every row is finite and
    /// non-zero, equals the `[N,S+N]` mask that shows only the sinks (shared tolerance), and with one
    /// sink equals sinkStates · v_projᵀ (per kv head h / group) · out_projᵀ computed by hand
    /// (tolerance 1e-5 relative).
    func testSinkIsVisibleUnderCausalMask() throws {
        let n = 5, batch = 2, dModel = 16, nHeads = 4, kvHeads = 2
        for sinks in [1, 3] {
            let label = "sinks \(sinks)"
            let withSinks = try Fixture.model(AttentionConfig(
                dModel: dModel, nHeads: nHeads, useAttentionSinks: true, numAttentionSinks: sinks,
                useGQA: true, gqaGroups: kvHeads), seed: 131)
            var plain = try MultiHeadAttention(config: AttentionConfig(
                dModel: dModel, nHeads: nHeads, useGQA: true, gqaGroups: kvHeads), seed: 4321)
            try Fixture.copyWeights(from: withSinks, into: &plain)
            let x = Fixture.tensor([batch, n, dModel], seed: 132, amplitude: 2)

            let hideTokens = try Tensor(shape: [n, n], scalars: .init(repeating: -.infinity, count: n * n))
            var onlySinks = [Float](repeating: -.infinity, count: n * (sinks + n))
            for i in 0..<n { for c in 0..<sinks { onlySinks[i * (sinks + n) + c] = 0 } }
            let showOnlySinks = try Tensor(shape: [n, sinks + n], scalars: onlySinks)

            for kernel in AttentionKernel.allCases {
                let kernelLabel = "\(label), kernel \(kernel)"
                let sinkOutput = try Fixture.run(withSinks, x, kernel: kernel)
                let plainOutput = try Fixture.run(plain, x, kernel: kernel)
                for b in 0..<batch {
                    Fixture.assertDiffer(Fixture.rows(sinkOutput, batch: b, 0..<1), Fixture.rows(plainOutput, batch: b, 0..<1),
                                         relative: Self.distinct, "\(kernelLabel): batch \(b), first token with vs without sinks")
                }

                let hidden = try Fixture.run(withSinks, x, mask: hideTokens, kernel: kernel)
                for b in 0..<batch {
                    for r in 0..<n {
                        let row = Fixture.rows(hidden, batch: b, r..<r + 1)
                        XCTAssertTrue(row.allSatisfy(\.isFinite), "\(kernelLabel): batch \(b), row \(r) not finite")
                        XCTAssertTrue(row.contains { abs($0) > Self.distinct }, "\(kernelLabel): batch \(b), row \(r) is zero")
                    }
                }
                assertClose(hidden.scalars, try Fixture.run(withSinks, x, mask: showOnlySinks, kernel: kernel).scalars,
                            "\(kernelLabel): [N,N] −∞ vs [N,S+N] sinks-only mask")

                if sinks == 1 {
                    // One visible key: softmax is 1 on it, so head h's context is the sink's value
                    // for kv head h / group, for every query.
                    let headDim = dModel / nHeads, group = nHeads / kvHeads
                    let sink = withSinks.sinkStates!.scalars, v = withSinks.vProj.scalars, o = withSinks.outProj.scalars
                    var sinkValue = [Double](repeating: 0, count: kvHeads * headDim)
                    for r in 0..<kvHeads * headDim {
                        for c in 0..<dModel { sinkValue[r] += Double(sink[c]) * Double(v[r * dModel + c]) }
                    }
                    let context = (0..<dModel).map { e in sinkValue[(e / headDim / group) * headDim + e % headDim] }
                    let expectedRow = (0..<dModel).map { r in
                        Float((0..<dModel).reduce(0.0) { $0 + context[$1] * Double(o[r * dModel + $1]) })
                    }
                    let expected = Array([[Float]](repeating: expectedRow, count: batch * n).joined())
                    assertClose(hidden.scalars, expected, "\(kernelLabel): all tokens hidden, output = out(v_sink)")
                }
            }
        }
    }
}

// MARK: - Fixtures

/// Helpers private to this file (a namespace, so names cannot clash with other test files).
private enum Fixture {
    /// Deterministic `[shape]` from `U(−amplitude, amplitude)`.
    static func tensor(_ shape: [Int], seed: UInt64, amplitude: Double = 1) -> Tensor {
        var generator = SeededGenerator(seed: seed)
        let count = shape.reduce(1, *)
        return try! Tensor(shape: shape, scalars: (0..<count).map { _ in generator.nextUniform(bound: amplitude) })
    }

    /// A layer from `seed` whose sink states (if any) are `U(−1, 1)`: PyTorch's N(0, 0.02²) sinks
    /// barely move the scores, which would let a hidden sink pass for a visible one.
    static func model(_ config: AttentionConfig, seed: UInt64) throws -> MultiHeadAttention {
        var model = try MultiHeadAttention(config: config, seed: seed)
        if config.useAttentionSinks {
            try model.setWeight(tensor([config.numAttentionSinks, config.dModel], seed: seed ^ 0x5155), for: .sinkStates)
        }
        return model
    }

    /// Copies every parameter both layers have (except `skipping`) from `source` into `target`.
    static func copyWeights(
        from source: MultiHeadAttention, into target: inout MultiHeadAttention,
        skipping: Set<AttentionParameter> = []
    ) throws {
        for parameter in AttentionParameter.allCases where !skipping.contains(parameter) {
            guard target.expectedShape(of: parameter) != nil, let value = source.weight(parameter) else { continue }
            try target.setWeight(value, for: parameter)
        }
    }

    static func run(
        _ model: MultiHeadAttention, _ x: Tensor, mask: Tensor? = nil, kernel: AttentionKernel?,
        training: Bool = false, seed: UInt64? = nil
    ) throws -> Tensor {
        try model.forward(x, mask: mask, training: training, dropoutSeed: seed, kernel: kernel)
    }

    /// Rows `range` of batch row `b` of a `[B, N, d]` tensor, flattened.
    static func rows(_ t: Tensor, batch b: Int, _ range: Range<Int>) -> [Float] {
        let n = t.shape[1], d = t.shape[2]
        return Array(t.scalars[(b * n + range.lowerBound) * d..<(b * n + range.upperBound) * d])
    }

    /// The element pairs RoPE rotates together, indexed by frequency i.
    static func ropePairs(headDim: Int, pairing: RoPEPairing) -> [(Int, Int)] {
        let half = headDim / 2
        switch pairing {
        case .halfSplit: return (0..<half).map { ($0, $0 + half) }
        case .interleaved: return (0..<half).map { (2 * $0, 2 * $0 + 1) }
        }
    }

    /// Rows of a `[heads·headDim, in]` projection reordered within each head so that halfSplit
    /// row i takes interleaved row 2i and row i + D/2 takes row 2i + 1.
    static func permuteInterleavedToHalfSplit(_ w: Tensor, headDim: Int) throws -> Tensor {
        let columns = w.shape[1], half = headDim / 2
        var scalars = w.scalars
        for head in 0..<w.shape[0] / headDim {
            for i in 0..<half {
                for (target, source) in [(i, 2 * i), (i + half, 2 * i + 1)] {
                    let to = (head * headDim + target) * columns, from = (head * headDim + source) * columns
                    scalars.replaceSubrange(to..<to + columns, with: w.scalars[from..<from + columns])
                }
            }
        }
        return try Tensor(shape: w.shape, scalars: scalars)
    }

    static func norm(_ v: [Float]) -> Double {
        v.reduce(0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    /// max |a − b| > relative · max(1, max |b|): the two computations really differ. Every
    /// value must be finite: a NaN or ±∞ is a failure, never a difference.
    static func assertDiffer(
        _ a: [Float], _ b: [Float], relative: Float, _ message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        guard a.count == b.count else {
            return XCTFail("\(message): \(a.count) values, expected \(b.count)", file: file, line: line)
        }
        guard a.allSatisfy(\.isFinite) && b.allSatisfy(\.isFinite) else {
            return XCTFail("\(message): non-finite values", file: file, line: line)
        }
        let comparison = Comparison(a, b)
        let threshold = Double(relative) * max(1, comparison.scale)
        XCTAssertTrue(comparison.maxError > threshold,
                      "\(message): should differ, but max |Δ| = \(comparison.maxError) ≤ \(threshold)",
                      file: file, line: line)
    }
}
