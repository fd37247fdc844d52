import XCTest
@testable import Attention

/// The float64 backward oracle earns its trust here, before any library backward is compared
/// with it: its forward equals ``NaiveAttentionOracle``'s, and every gradient (x, the four
/// projections, the sink states) equals central finite differences of that forward, on tiny
/// layers that cover GQA, sinks, both RoPE pairings with scaling, causal or not, an additive
/// mask over the sinks and dropout with a fixed seed.
///
/// Tolerance: float64 central differences with step 1e-5 have truncation error ~1e-10 and
/// rounding error ~1e-11 here; a gradient passes at |g − fd| ≤ 1e-7 + 1e-6 · |fd|.
/// The layers both backward suites differentiate: (name, config, batch, seq, mask over the
/// sinks, dropout seed or `nil` for evaluation).
func tinyBackwardCases() throws -> [(String, AttentionConfig, Int, Int, Bool, UInt64?)] {
    [
        ("GQA 4/2, 2 sinks, causal, halfSplit, dropout",
         try AttentionConfig(dModel: 8, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                             useGQA: true, gqaGroups: 2, dropout: 0.3), 2, 3, false, 5),
        ("MQA 2/1, 1 sink, not causal, interleaved × 2.5 scaling, mask over sinks",
         try AttentionConfig(dModel: 8, nHeads: 2, ropeScaling: 2.5, ropePairing: .interleaved,
                             useAttentionSinks: true, numAttentionSinks: 1, useGQA: true, gqaGroups: 1,
                             isCausal: false), 1, 4, true, nil),
        ("MHA 2/2, no sinks, no RoPE, causal",
         try AttentionConfig(dModel: 6, nHeads: 2, useRoPE: false), 2, 3, false, nil),
    ]
}

final class BackwardOracleTests: XCTestCase {
    func testForwardEqualsTheNaiveOracle() throws {
        for (name, config, batch, seq, overSinks, seed) in try tinyBackwardCases() {
            let model = try MultiHeadAttention(config: config, seed: 3)
            let x = randomTensor([batch, seq, config.dModel], seed: 4)
            let mask = overSinks ? maskOverSinks(config: config, batch: batch, seq: seq) : nil
            let expected = NaiveAttentionOracle.forward(model, x: x, mask: mask, dropoutSeed: seed)
            let actual = BackwardOracle(model).forward(x.scalars.map(Double.init), batch: batch, seq: seq,
                                                       mask: mask, dropoutSeed: seed)
            XCTAssertEqual(actual.count, expected.count, name)
            for (i, (a, e)) in zip(actual, expected).enumerated() {
                XCTAssertLessThanOrEqual(abs(a - e), 1e-12 * max(1, abs(e)), "\(name): y[\(i)]")
            }
        }
    }

    func testGradientsEqualCentralFiniteDifferences() throws {
        let step = 1e-5
        for (name, config, batch, seq, overSinks, seed) in try tinyBackwardCases() {
            let model = try MultiHeadAttention(config: config, seed: 9)
            let oracle = BackwardOracle(model)
            let x = randomTensor([batch, seq, config.dModel], seed: 10).scalars.map(Double.init)
            let dy = randomTensor([batch, seq, config.dModel], seed: 11).scalars.map(Double.init)
            let mask = overSinks ? maskOverSinks(config: config, batch: batch, seq: seq) : nil
            let gradients = oracle.backward(x, batch: batch, seq: seq, dy: dy, mask: mask, dropoutSeed: seed).gradients

            func loss(_ layer: BackwardOracle, _ input: [Double]) -> Double {
                zip(layer.forward(input, batch: batch, seq: seq, mask: mask, dropoutSeed: seed), dy)
                    .reduce(0) { $0 + $1.0 * $1.1 }
            }
            func check(_ label: String, _ analytic: [Double], _ perturbed: (Int, Double) -> Double) {
                for i in analytic.indices {
                    let difference = (perturbed(i, step) - perturbed(i, -step)) / (2 * step)
                    let error = abs(analytic[i] - difference)
                    XCTAssertTrue(error <= 1e-7 + 1e-6 * abs(difference),
                                  "\(name): d\(label)[\(i)] = \(analytic[i]), finite difference \(difference)")
                }
            }
            check("x", gradients.input) { i, h in
                var moved = x
                moved[i] += h
                return loss(oracle, moved)
            }
            var parameters: [AttentionParameter] = [.qProj, .kProj, .vProj, .outProj]
            if config.useAttentionSinks { parameters.append(.sinkStates) }
            for parameter in parameters {
                XCTAssertEqual(gradients[parameter].count, oracle[parameter].count, "\(name): \(parameter)")
                check(parameter.rawValue, gradients[parameter]) { i, h in
                    var moved = oracle
                    moved[parameter][i] += h
                    return loss(moved, x)
                }
            }
        }
    }

    /// A fully masked query row has zero gradients everywhere it would have reached, never NaN.
    func testAFullyMaskedRowGivesZeroGradientsNotNaN() throws {
        let config = try AttentionConfig(dModel: 4, nHeads: 1, useRoPE: false, isCausal: false)
        let model = try MultiHeadAttention(config: config, seed: 2)
        var mask = try Tensor(shape: [2, 2], scalars: [0, 0, 0, 0])
        mask.scalars[2] = -.infinity
        mask.scalars[3] = -.infinity  // query 1 sees nothing
        let x = randomTensor([1, 2, 4], seed: 3).scalars.map(Double.init)
        var dy = [Double](repeating: 0, count: 8)
        for e in 4..<8 { dy[e] = 1 }  // only query 1's output matters
        let (output, gradients) = BackwardOracle(model).backward(x, batch: 1, seq: 2, dy: dy, mask: mask)
        XCTAssertEqual(Array(output[4..<8]), [0, 0, 0, 0])
        for parameter: AttentionParameter in [.qProj, .kProj, .vProj] {
            XCTAssertTrue(gradients[parameter].allSatisfy { $0 == 0 }, "\(parameter)")
        }
        XCTAssertTrue(gradients.input.allSatisfy { $0 == 0 })
        XCTAssertTrue(gradients.outProj.allSatisfy { $0 == 0 }, "its context is zero")
    }

    /// `[batch, 1, seq, S + seq]`, finite, with some keys hidden (−∞) but every row seeing one.
    private func maskOverSinks(config: AttentionConfig, batch: Int, seq: Int) -> Tensor {
        let width = config.numSinks + seq
        var values = randomTensor([batch, 1, seq, width], seed: 12, amplitude: 0.5).scalars
        for b in 0..<batch {
            values[(b * seq + 0) * width + width - 1] = -.infinity
        }
        return try! Tensor(shape: [batch, 1, seq, width], scalars: values)
    }
}

/// Both kernels' backward passes (through the whole layer) against the float64 oracle, on
/// the oracle's tiny layers and a larger GQA layer with a causal, dropped-out, padded-mask run.
/// Tolerance: the one comparison helper (`Tolerance`) on each gradient.
final class ReferenceBackwardTests: XCTestCase {
    func testLayerGradientsMatchTheFloat64Oracle() throws {
        let cases = try tinyBackwardCases() + [
            ("GQA 6/2, 3 sinks, causal, dropout, 37 tokens",
             try AttentionConfig(dModel: 48, nHeads: 6, useAttentionSinks: true, numAttentionSinks: 3,
                                 useGQA: true, gqaGroups: 2, dropout: 0.2), 2, 37, true, 17),
        ]
        for (caseName, config, batch, seq, masked, seed) in cases {
          for kernel in AttentionKernel.allCases {
            let name = "\(caseName), \(kernel)"
            let model = try MultiHeadAttention(config: config, seed: 21)
            let x = randomTensor([batch, seq, config.dModel], seed: 22)
            let dy = randomTensor([batch, seq, config.dModel], seed: 23)
            let mask = masked ? sinkMask(config: config, batch: batch, seq: seq) : nil
            let (output, gradients) = try model.layerGradients(
                x, mask: mask, training: seed != nil, dropoutSeed: seed ?? 0, dy: dy, kernel: kernel)
            let (expectedOutput, expected) = BackwardOracle(model).backward(
                x.scalars.map(Double.init), batch: batch, seq: seq, dy: dy.scalars.map(Double.init), mask: mask,
                dropoutSeed: seed)
            assertClose(output.scalars, expectedOutput, "\(name): y")
            assertClose(gradients.input, expected.input, "\(name): dx")
            for parameter in AttentionParameter.allCases {
                guard let actual = gradients[parameter] else {
                    XCTAssertFalse(config.useAttentionSinks && parameter == .sinkStates, "\(name): dsinks missing")
                    continue
                }
                assertClose(actual, expected[parameter], "\(name): d\(parameter.rawValue)")
            }
            let forward = try model.forward(x, mask: mask, training: seed != nil, dropoutSeed: seed ?? 0,
                                            kernel: kernel)
            assertBitwiseEqual(output.scalars, forward.scalars, "\(name): the forward it differentiates")
          }
        }
    }

    /// The flash backward against the reference backward with forced small blocks (one key,
    /// blocks that do not divide the lengths, one block for everything) and odd lengths, with
    /// sinks, GQA, causal and dropout: every block boundary and partial block is crossed.
    func testFlashBackwardEqualsReferenceAcrossBlockSizes() throws {
        let config = try AttentionConfig(dModel: 24, nHeads: 6, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 3, dropout: 0.25)
        for seq in [1, 7, 23] {
            var model = try MultiHeadAttention(config: config, seed: UInt64(40 + seq))
            let x = randomTensor([2, seq, 24], seed: 41), dy = randomTensor([2, seq, 24], seed: 42)
            let reference = try model.layerGradients(x, mask: nil, training: true, dropoutSeed: 3, dy: dy,
                                                     kernel: .reference).gradients
            // The last run splits the keys in the forward (its log-sum-exp comes from the merge).
            // `.chunks(3)` with 7-key blocks: three key chunks (two partial dQs) once seq > 7.
            for (queryBlock, keyBlock, split) in [(1, 1, KeySplit.never), (3, 5, .never), (16, 7, .never),
                                                  (64, 64, .never), (64, 64, .chunks(3)), (16, 7, .chunks(3))] {
                model.flashBlockSizes = FlashBlockSizes(queryBlock: queryBlock, keyBlock: keyBlock)
                model.keySplit = split
                let flash = try model.layerGradients(x, mask: nil, training: true, dropoutSeed: 3, dy: dy,
                                                     kernel: .flash).gradients
                let label = "seq \(seq), blocks \(queryBlock) × \(keyBlock), \(split)"
                assertClose(flash.input, reference.input.map(Double.init), "\(label): dx")
                for parameter in AttentionParameter.allCases {
                    assertClose(flash[parameter]!, reference[parameter]!.map(Double.init), "\(label): d\(parameter.rawValue)")
                }
            }
        }
    }

    /// `[batch, 1, seq, S + seq]` with one key hidden per row and the last query row of batch
    /// row 0 seeing nothing at all: its gradients must be zeros, never NaN.
    private func sinkMask(config: AttentionConfig, batch: Int, seq: Int) -> Tensor {
        let width = config.numSinks + seq
        var values = randomTensor([batch, 1, seq, width], seed: 24, amplitude: 0.5).scalars
        for b in 0..<batch {
            for i in 0..<seq { values[(b * seq + i) * width + (i * 7) % width] = -.infinity }
        }
        for j in 0..<width { values[(seq - 1) * width + j] = -.infinity }
        return try! Tensor(shape: [batch, 1, seq, width], scalars: values)
    }
}

extension ReferenceBackwardTests {
    /// Deterministic: the same gradients, bit for bit, for 1, 2 and 4 workers.
    func testGradientsAreBitwiseIdenticalForEveryWorkerCount() throws {
        // GQA over three batch rows (one key chunk per item); one batch row with one key/value
        // head, whose keys the flash backward splits into chunks (partial dQs) by itself and
        // when told to; 300 rows give the projections' backward several row blocks.
        let gqa = try AttentionConfig(dModel: 32, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                      useGQA: true, gqaGroups: 2, dropout: 0.1)
        let mqa = try AttentionConfig(dModel: 32, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 3,
                                      useGQA: true, gqaGroups: 1, dropout: 0.1)
        let setups: [(String, AttentionConfig, batch: Int, seq: Int, KeySplit)] = [
            ("GQA, batch 3", gqa, 3, 19, .automatic), ("MQA, batch 1", mqa, 1, 300, .automatic),
            ("MQA, batch 1, 3 key chunks", mqa, 1, 300, .chunks(3)),
        ]
        for (name, config, batch, seq, split) in setups {
          var model = try MultiHeadAttention(config: config, seed: 31)
          model.flashBlockSizes = FlashBlockSizes(queryBlock: 8, keyBlock: 5)
          model.keySplit = split
          let x = randomTensor([batch, seq, 32], seed: 32), dy = randomTensor([batch, seq, 32], seed: 33)
          var reference: LayerGradients?
          for kernel in AttentionKernel.allCases.reversed() {
            var first: LayerGradients?
            for workers in [1, 2, 4] {
                model.kernelWorkerCount = workers
                let gradients = try model.layerGradients(x, mask: nil, training: true, dropoutSeed: 4, dy: dy,
                                                         kernel: kernel).gradients
                guard let first else {
                    first = gradients
                    if kernel == .reference { reference = gradients }
                    if kernel == .flash, let reference {
                        // The key chunks' partial dQs, all of them, reach dx and dWq.
                        assertClose(gradients.input, reference.input, "\(name): flash dx vs reference")
                        for parameter in AttentionParameter.allCases {
                            assertClose(gradients[parameter]!, reference[parameter]!,
                                        "\(name): flash d\(parameter.rawValue) vs reference")
                        }
                    }
                    continue
                }
                let label = "\(name), \(kernel), \(workers) workers"
                assertBitwiseEqual(gradients.input, first.input, "\(label): dx")
                for parameter in AttentionParameter.allCases {
                    assertBitwiseEqual(gradients[parameter]!, first[parameter]!, "\(label): d\(parameter.rawValue)")
                }
            }
          }
        }
    }

    /// The automatic split keeps its partial dQs within max(one dQ, 64 MiB): one kv head and
    /// 12 query heads of 64 at N = 16,384 (a 48 MiB dQ) get two chunks whatever the processor
    /// count; at N = 1,024 (3 MiB) four per processor, up to its 8 key blocks. (The plan reads shapes and
    /// positions only, so the buffers here are a placeholder.)
    func testFlashBackwardChunksStayWithinTheirMemoryBudget() {
        let placeholder = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        defer { placeholder.deallocate() }
        for (n, expected) in [(16_384, 2), (1_024, min(4 * FlashAttention.defaultWorkerCount, 8, 1 + (64 << 20) / (1_024 * 768 * 4)))] {
            let segment = KeyValueSegment(keys: placeholder, values: placeholder, rowStride: 64, rowCount: n,
                                          firstPosition: 0, isSink: false, firstMaskColumn: nil)
            let problem = AttentionProblem(
                batch: 1, queryCount: n, nHeads: 12, numKVHeads: 1, headDim: 64, queries: placeholder,
                queryFirstPosition: 0, segments: [[segment]], mask: nil, isCausal: true, scale: 0.125, dropout: nil,
                context: placeholder)
            let plan = FlashBackward.Plan(problem, queryBlock: 64, keyBlock: 128, keySplit: .automatic)
            XCTAssertEqual(plan.chunks, expected, "N \(n)")
        }
    }

    /// The flash backward's work split: every key block of every batch row in exactly one
    /// chunk, in order; one chunk when batch × key/value heads feed every processor twice; and
    /// chunks of about equal work under the causal rule (late keys are seen by fewer queries,
    /// so the last chunk holds more of them).
    func testFlashBackwardChunksCoverEveryKeyBlockOnce() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 1)
        let model = try MultiHeadAttention(config: config, seed: 1)
        for (batch, split, expected) in [(1, KeySplit.chunks(4), 4), (1, .never, 1), (2, .chunks(3), 3),
                                         (1, .automatic, min(4 * FlashAttention.defaultWorkerCount, 33))] {
            let seq = 256
            let saved = try model.savedForward(randomTensor([batch, seq, 16], seed: 2), mask: nil, training: false,
                                               dropoutSeed: 0, kernel: .flash)
            let segments = model.keySegments(tokens: saved.tokens, seq: seq, tokenCounts: Array(repeating: seq, count: batch),
                                             positions: Array(repeating: 2, count: batch), cache: nil, coversSinks: false)
            let problem = AttentionProblem(
                batch: batch, queryCount: seq, nHeads: 4, numKVHeads: 1, headDim: 4, queries: saved.queries.pointer,
                queryFirstPosition: 2, segments: segments, mask: nil, isCausal: true, scale: 0.5, dropout: nil,
                context: UnsafeMutablePointer(mutating: saved.context.pointer))
            let plan = FlashBackward.Plan(problem, queryBlock: 16, keyBlock: 8, keySplit: split)
            XCTAssertEqual(plan.chunks, expected, "batch \(batch), \(split)")
            for b in 0..<batch {
                // 2 sinks + 256 tokens in blocks of 8: one sink block and 32 token blocks.
                XCTAssertEqual(plan.keyBlocks[b].count, 33)
                XCTAssertEqual(plan.chunkBlocks[b].first?.lowerBound, 0)
                XCTAssertEqual(plan.chunkBlocks[b].last?.upperBound, 33)
                for (previous, next) in zip(plan.chunkBlocks[b], plan.chunkBlocks[b].dropFirst()) {
                    XCTAssertEqual(previous.upperBound, next.lowerBound, "batch \(batch), \(split): contiguous")
                }
                if plan.chunks > 1 {
                    XCTAssertLessThan(plan.chunkBlocks[b].first!.count, plan.chunkBlocks[b].last!.count,
                                      "batch \(batch), \(split): split by work, not by keys")
                    // Causal: the last chunk's keys start at token block `first`, so queries before
                    // that block's first position never see them; its partial dQ starts at the
                    // query block holding that position.
                    let first = plan.chunkBlocks[b].last!.lowerBound, firstToken = (first - 1) * 8
                    XCTAssertEqual(plan.partialRows(batch: b, chunk: plan.chunks - 1),
                                   (firstToken / 16 * 16)..<seq, "batch \(batch), \(split): partial rows")
                }
            }
            withExtendedLifetime(saved) {}
        }
    }

    /// A `dy` of the wrong shape or holding NaN/±∞ is an error naming it.
    func testBadDyThrows() throws {
        let model = try MultiHeadAttention(config: try AttentionConfig(dModel: 8, nHeads: 2), seed: 1)
        let x = randomTensor([1, 3, 8], seed: 2)
        assertThrows(AttentionError.invalidInput, containing: ["dy shape [1, 4, 8]", "must equal the shape of x, [1, 3, 8]"],
                     "dy too long") {
            _ = try model.layerGradients(x, mask: nil, training: false, dropoutSeed: 0, dy: randomTensor([1, 4, 8], seed: 3), kernel: .flash)
        }
        for bad in [Float.nan, .infinity, -.infinity] {
            var dy = randomTensor([1, 3, 8], seed: 3)
            dy.scalars[13] = bad
            assertThrows(AttentionError.invalidInput, containing: ["dy[0, 1, 5]", "(\(bad))", "must be finite"],
                         "dy holds \(bad)") {
                _ = try model.layerGradients(x, mask: nil, training: false, dropoutSeed: 0, dy: dy, kernel: .flash)
            }
        }
    }
}

/// The public face: `forwardWithPullback` and `AttentionGradients`.
final class PullbackTests: XCTestCase {
    func testPullbackGivesTheOracleGradientsShapedLikeTheParameters() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 2, dropout: 0.2)
        let model = try MultiHeadAttention(config: config, seed: 51)
        let x = randomTensor([2, 9, 16], seed: 52), dy = randomTensor([2, 9, 16], seed: 53)
        for kernel in AttentionKernel.allCases {
            let (y, pullback) = try model.forwardWithPullback(x, training: true, dropoutSeed: 7, kernel: kernel)
            assertBitwiseEqual(y.scalars, try model.forward(x, training: true, dropoutSeed: 7, kernel: kernel).scalars,
                               "\(kernel): y is forward's")
            let grads = try pullback(dy)
            let expected = BackwardOracle(model).backward(x.scalars.map(Double.init), batch: 2, seq: 9,
                                                          dy: dy.scalars.map(Double.init), dropoutSeed: 7).gradients
            XCTAssertEqual(grads.input.shape, [2, 9, 16])
            assertClose(grads.input.scalars, expected.input, "\(kernel): dx")
            for parameter in AttentionParameter.allCases {
                let gradient = try XCTUnwrap(grads[parameter], "\(kernel): \(parameter)")
                XCTAssertEqual(gradient.shape, model.expectedShape(of: parameter), "\(kernel): \(parameter) shape")
                assertClose(gradient.scalars, expected[parameter], "\(kernel): d\(parameter.rawValue)")
            }
        }
        let plain = try MultiHeadAttention(config: try AttentionConfig(dModel: 16, nHeads: 4), seed: 1)
        XCTAssertNil(try plain.forwardWithPullback(x).pullback(dy)[.sinkStates], "no sinks, no sink gradient")
    }

    /// An empty batch or sequence: an empty output and zero gradients, no trap.
    func testEmptyInputsGiveZeroGradients() throws {
        let config = try AttentionConfig(dModel: 8, nHeads: 2, useAttentionSinks: true, numAttentionSinks: 2)
        let model = try MultiHeadAttention(config: config, seed: 71)
        for shape in [[0, 3, 8], [2, 0, 8]] {
            for kernel in AttentionKernel.allCases {
                let (y, pullback) = try model.forwardWithPullback(Tensor(zeros: shape), kernel: kernel)
                XCTAssertEqual(y.shape, shape)
                let grads = try pullback(Tensor(zeros: shape))
                XCTAssertEqual(grads.input.shape, shape)
                for parameter in AttentionParameter.allCases {
                    let gradient = try XCTUnwrap(grads[parameter], "\(shape), \(kernel): \(parameter)")
                    XCTAssertTrue(gradient.scalars.allSatisfy { $0 == 0 }, "\(shape), \(kernel): \(parameter)")
                }
            }
        }
    }

    /// A drawn seed is reused: two calls, and a call from another thread, give the same bits.
    func testPullbackIsRepeatableAndCallableFromAnotherThread() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 2, dropout: 0.3)
        let model = try MultiHeadAttention(config: config, seed: 61)
        let x = randomTensor([1, 12, 16], seed: 62), dy = randomTensor([1, 12, 16], seed: 63)
        let (_, pullback) = try model.forwardWithPullback(x, training: true)
        let first = try pullback(dy), second = try pullback(dy)
        let elsewhere = try DispatchQueue.global().sync { try pullback(dy) }
        for other in [second, elsewhere] {
            assertBitwiseEqual(other.input.scalars, first.input.scalars, "dx")
            for parameter: AttentionParameter in [.qProj, .kProj, .vProj, .outProj] {
                assertBitwiseEqual(other[parameter]!.scalars, first[parameter]!.scalars, "d\(parameter.rawValue)")
            }
        }
        assertThrows(AttentionError.invalidInput, containing: ["dy shape [1, 11, 16]", "[1, 12, 16]"], "short dy") {
            _ = try pullback(randomTensor([1, 11, 16], seed: 1))
        }
    }
}
