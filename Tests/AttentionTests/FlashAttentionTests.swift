import XCTest
@testable import Attention

/// The flash kernel at the kernel level, on inputs made by hand: the rules a layer-level case
/// cannot reach (scores that keep rising across blocks, all-equal scores, rows hidden by the
/// mask). The parameter matrix over shapes, GQA ratios, masks, sinks, windows, dropout, blocks
/// and workers is ``AttentionCaseTests``'; the cases here are ``AttentionCase``s too, run through
/// the kernels' one entry point (`AttentionProblem.run(_:)`) by ``AttentionCase/KernelInputs``.
/// Comparisons use the suite's one ``Tolerance``.
final class FlashAttentionTests: XCTestCase {

    // MARK: - Rules

    /// Scores spread over ±60 with a ramp in the keys, so the running maximum keeps rising from
    /// one key block to the next and every rescale of the accumulator is exercised.
    func testOnlineSoftmaxRescalesWhenLaterBlocksHoldLargerScores() {
        var spec = AttentionCase(headDim: 8, keyLength: 200, queryCount: 40,
                                 blocks: FlashBlockSizes(queryBlock: 8, keyBlock: 16))
        for causal in [false, true] {
            spec.causal = causal
            var ramped = AttentionCase.KernelInputs(spec, amplitude: 3)
            let kv = spec.kvHeads * spec.headDim
            for row in 0..<spec.keyLength {
                for e in 0..<kv { ramped.keys[row * kv + e] += Float(row) / 20 }
            }
            for i in 0..<ramped.queries.count { ramped.queries[i] = abs(ramped.queries[i]) }
            assertClose(ramped.run(spec, kernel: .flash), ramped.run(spec, kernel: .reference),
                        "flash vs reference, ramped keys: \(spec)")
        }
    }

    /// All scores equal (zero queries), token values 1, sink values 0: a row that sees `n`
    /// tokens and `S` sinks weighs each key `1/(n+S)`, so every context entry is `n/(n+S)`.
    /// A sink counted in every key block, or never, shows up as a different fraction.
    func testSinkIsCountedOnceForEveryBlockSize() {
        let spec = AttentionCase(headDim: 8, heads: 2, kvHeads: 1, keyLength: 37, queryCount: 37, sinks: 3)
        var inputs = AttentionCase.KernelInputs(spec)
        inputs.queries = inputs.queries.map { _ in 0 }
        inputs.values = inputs.values.map { _ in 1 }
        inputs.sinkValues = inputs.sinkValues.map { _ in 0 }
        for (queryBlock, keyBlock) in [(1, 1), (4, 16), (5, 7), (8, 32), (37, 512), (64, 2)] {
            var blocked = spec
            blocked.blocks = FlashBlockSizes(queryBlock: queryBlock, keyBlock: keyBlock)
            let context = inputs.run(blocked, kernel: .flash)
            let expected = (0..<spec.queryCount).flatMap { i -> [Double] in
                let n = Double(i + 1)  // causal: token query i sees tokens 0...i
                return Array(repeating: n / (n + Double(spec.sinks)), count: spec.heads * spec.headDim)
            }
            assertClose(context, expected, "context n/(n+S): \(blocked)")
        }
    }

    func testFullyMaskedRowsGiveZerosInFlash() {
        let spec = AttentionCase(keyLength: 20, queryCount: 20, batch: 2, mask: .perBatchWithSinks, sinks: 2,
                                 blocks: FlashBlockSizes(queryBlock: 8, keyBlock: 16))
        var inputs = AttentionCase.KernelInputs(spec)
        let width = inputs.maskWidth
        let hiddenRows = [0, 9, 19]
        for b in 0..<spec.batch {
            for row in hiddenRows {
                for j in 0..<width { inputs.mask[(b * spec.queryCount + row) * width + j] = -.infinity }
            }
        }
        let flash = inputs.run(spec, kernel: .flash)
        let rowWidth = spec.heads * spec.headDim
        for b in 0..<spec.batch {
            for row in 0..<spec.queryCount {
                let values = flash[((b * spec.queryCount + row) * rowWidth)..<((b * spec.queryCount + row + 1) * rowWidth)]
                if hiddenRows.contains(row) {
                    XCTAssertTrue(values.allSatisfy { $0 == 0 }, "batch \(b) row \(row) must be zeros: \(spec)")
                } else {
                    XCTAssertTrue(values.allSatisfy { $0.isFinite } && values.contains { $0 != 0 },
                                  "batch \(b) row \(row): \(spec)")
                }
            }
        }
    }

    /// Bitwise: a (batch, head, query block) item is computed start to finish by one worker with
    /// the same sequence of single-threaded sgemms and SIMD passes whichever worker takes it, so
    /// the worker count changes only who computes an item, never how.
    func testFlashIsBitwiseIdenticalAcrossWorkerCounts() {
        for causal in [false, true] {
            var spec = AttentionCase(headDim: 16, heads: 4, kvHeads: 2, keyLength: 130, queryCount: 130, batch: 2,
                                     mask: .perBatch, sinks: 2, causal: causal, dropout: 0.1, training: true,
                                     blocks: FlashBlockSizes(queryBlock: 16, keyBlock: 32))
            let inputs = AttentionCase.KernelInputs(spec)
            let serial = inputs.run(spec, kernel: .flash)
            for workers in [2, 4] {
                spec.workers = workers
                let parallel = inputs.run(spec, kernel: .flash)
                assertBitwiseEqual(parallel, serial, "\(workers) workers vs 1 worker: \(spec)")
            }
        }
    }

    func testFlashLeavesTheOpenBLASThreadCountAsItFoundIt() {
        let saved = BLAS.threadCount
        defer { BLAS.threadCount = saved }
        BLAS.threadCount = 2
        let spec = AttentionCase(keyLength: 64, queryCount: 64, workers: 2)
        _ = AttentionCase.KernelInputs(spec).run(spec, kernel: .flash)
        XCTAssertEqual(BLAS.threadCount, 2)
    }
}

extension AttentionCase {
    /// A case at the kernel level: post-RoPE queries, keys, values, sink keys and values and an
    /// additive mask drawn directly (no projections, no RoPE), so a test can shape them by hand.
    /// Sinks sit at positions `0..<S`, token keys at `S..<S + keyLength`, and the queries are the
    /// last `queryCount` tokens (bottom-right aligned, as when decoding from a cache). The mask
    /// is `[batch, 1, queryCount, width]`: the token keys, or with `...WithSinks` kinds the sinks
    /// too (other kinds are not used at this level).
    struct KernelInputs {
        var queries: [Float], keys: [Float], values: [Float], sinkKeys: [Float], sinkValues: [Float]
        var mask: [Float]
        /// Columns of the mask: 0 without one.
        let maskWidth: Int

        init(_ spec: AttentionCase, amplitude: Float = 1) {
            let kv = spec.kvHeads * spec.headDim
            func draw(_ count: Int, _ salt: UInt64, amplitude: Float) -> [Float] {
                randomTensor([count], seed: spec.seed &* 7919 ^ salt, amplitude: amplitude).scalars
            }
            queries = draw(spec.batch * spec.queryCount * spec.heads * spec.headDim, 1, amplitude: amplitude)
            keys = draw(spec.batch * spec.keyLength * kv, 2, amplitude: amplitude)
            values = draw(spec.batch * spec.keyLength * kv, 3, amplitude: 1)
            sinkKeys = draw(spec.sinks * kv, 4, amplitude: amplitude)
            sinkValues = draw(spec.sinks * kv, 5, amplitude: 1)
            switch spec.mask {
            case .none: maskWidth = 0
            case .squareWithSinks, .perBatchWithSinks: maskWidth = spec.sinks + spec.keyLength
            default: maskWidth = spec.keyLength
            }
            var generator = SeededGenerator(seed: spec.seed ^ 0x3C)
            mask = (0..<(spec.batch * spec.queryCount * maskWidth)).map { _ in
                switch generator.next() % 6 {
                case 0: return -.infinity
                case 1: return generator.nextUniform(bound: 2)
                default: return 0
                }
            }
        }

        /// One kernel's `[batch, queryCount, heads · headDim]` context for `spec` (its causal
        /// rule, window, dropout, blocks and workers), through `AttentionProblem.run(_:)`.
        func run(_ spec: AttentionCase, kernel: AttentionKernel) -> [Float] {
            let kv = spec.kvHeads * spec.headDim, s = spec.sinks, width = maskWidth
            var context = [Float](repeating: .nan, count: spec.batch * spec.queryCount * spec.heads * spec.headDim)
            // The sources of keys hand over their segments, as the layer's do.
            let sinks = ProjectedKeyValues(keys: AlignedBuffer(sinkKeys), values: AlignedBuffer(sinkValues), width: kv)
            let tokens = ProjectedKeyValues(keys: AlignedBuffer(keys), values: AlignedBuffer(values), width: kv)
            let coversSinks = width == s + spec.keyLength && s > 0
            let sinkSegments = s == 0 ? [] : [sinks.segment(rows: 0, count: s, firstPosition: 0, isSink: true,
                                                            firstMaskColumn: coversSinks ? 0 : nil)]
            let segments = (0..<spec.batch).map { b in
                sinkSegments + [tokens.segment(rows: b * spec.keyLength, count: spec.keyLength, firstPosition: s,
                                               isSink: false, firstMaskColumn: coversSinks ? s : 0)]
            }
            withExtendedLifetime((sinks, tokens)) {
            withUnsafePointers(to: [queries, mask]) { inputs in
                let (q, m) = (inputs[0], inputs[1])
                context.withUnsafeMutableBufferPointer { context in
                    AttentionProblem(
                        batch: spec.batch, queryCount: spec.queryCount, nHeads: spec.heads, numKVHeads: spec.kvHeads,
                        headDim: spec.headDim, queries: q, queryFirstPosition: s + spec.keyLength - spec.queryCount,
                        segments: segments,
                        mask: width == 0 ? nil : AdditiveMask(scalars: m, batchStride: spec.queryCount * width,
                                                              headStride: 0, rowStride: width),
                        isCausal: spec.causal, window: spec.window, scale: 1 / Float(spec.headDim).squareRoot(),
                        dropout: spec.training ? DropoutMask(probability: spec.dropout, seed: spec.seed) : nil,
                        context: context.baseAddress!
                    ).run(KernelOptions(kernel: kernel, workers: spec.workers, blockSizes: spec.blocks))
                }
            }
            }
            return context
        }
    }
}
