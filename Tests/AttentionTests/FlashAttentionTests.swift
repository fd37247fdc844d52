import XCTest
@testable import Attention

/// The flash kernel against the reference kernel at the kernel level, where query and key
/// counts, sinks, masks, block sizes and worker counts can be set independently: the rules that
/// need hand-made inputs. The parameter matrix over shapes, GQA ratios, masks, sinks, windows,
/// dropout, blocks and workers is ``AttentionCaseTests``'.
///
/// Tolerance, one for every comparison: max |flash − reference| ≤ 1e-5 · max(1, max |reference|).
/// The two differ only in summation order (blocked vs whole-row softmax sums, split P·V) and in
/// the exponential (a degree-5 polynomial, 2.3e-7 relative, vs the C library's), which together
/// stay below 1e-6 here; a wrong mask column, a lost rescale or a double-counted block is 1e-2.
final class FlashAttentionTests: XCTestCase {
    static let tolerance: Float = 1e-5

    enum MaskKind: CustomStringConvertible {
        case none
        /// `[B, 1, Nq, K]` over the token keys: sinks stay visible.
        case tokens
        /// `[B, 1, Nq, S + K]`, covering (and sometimes hiding) the sinks too.
        case sinksAndTokens

        var description: String {
            switch self {
            case .none: return "none"
            case .tokens: return "[B,1,Nq,K]"
            case .sinksAndTokens: return "[B,1,Nq,S+K]"
            }
        }
    }

    /// One kernel call. Sinks sit at positions `0..<S`, token keys at `S..<S+K`, and the
    /// queries are the last `Nq` tokens (bottom-right aligned, as when decoding from a cache).
    struct Spec: CustomStringConvertible {
        var batch = 1, queryCount = 5, keyCount = 5, sinkCount = 0
        var nHeads = 2, numKVHeads = 2, headDim = 16
        var causal = false
        var mask = MaskKind.none
        var dropout: Float? = nil
        var amplitude: Float = 1
        var blocks: FlashBlockSizes? = nil
        var workers: Int? = nil
        var seed: UInt64 = 1

        var description: String {
            "B \(batch), Nq \(queryCount), K \(keyCount), S \(sinkCount), heads \(nHeads)/\(numKVHeads), "
                + "D \(headDim), causal \(causal), mask \(mask), dropout \(dropout.map { "\($0)" } ?? "off"), "
                + "blocks \(blocks.map { "\($0.queryBlock)×\($0.keyBlock)" } ?? "auto"), workers \(workers.map(String.init) ?? "auto")"
        }
    }

    /// Inputs of a spec, drawn once so both kernels read the same numbers.
    struct Inputs {
        var queries: [Float], keys: [Float], values: [Float], sinkKeys: [Float], sinkValues: [Float]
        var mask: [Float]
        var maskShape: (heads: Int, width: Int)

        init(_ spec: Spec) {
            let kv = spec.numKVHeads * spec.headDim
            func draw(_ count: Int, _ salt: UInt64, amplitude: Float) -> [Float] {
                randomTensor([count], seed: spec.seed &* 7919 ^ salt, amplitude: amplitude).scalars
            }
            queries = draw(spec.batch * spec.queryCount * spec.nHeads * spec.headDim, 1, amplitude: spec.amplitude)
            keys = draw(spec.batch * spec.keyCount * kv, 2, amplitude: spec.amplitude)
            values = draw(spec.batch * spec.keyCount * kv, 3, amplitude: 1)
            sinkKeys = draw(spec.sinkCount * kv, 4, amplitude: spec.amplitude)
            sinkValues = draw(spec.sinkCount * kv, 5, amplitude: 1)
            switch spec.mask {
            case .none: maskShape = (1, 0)
            case .tokens: maskShape = (1, spec.keyCount)
            case .sinksAndTokens: maskShape = (1, spec.sinkCount + spec.keyCount)
            }
            var generator = SeededGenerator(seed: spec.seed ^ 0x3C)
            mask = (0..<(spec.batch * maskShape.heads * spec.queryCount * maskShape.width)).map { _ in
                switch generator.next() % 6 {
                case 0: return -.infinity
                case 1: return generator.nextUniform(bound: 2)
                default: return 0
                }
            }
        }
    }

    /// Runs one kernel on `inputs` and returns the `[B, Nq, H·D]` context.
    func run(_ spec: Spec, _ inputs: Inputs, kernel: AttentionKernel) -> [Float] {
        let kv = spec.numKVHeads * spec.headDim
        var context = [Float](repeating: .nan, count: spec.batch * spec.queryCount * spec.nHeads * spec.headDim)
        let s = spec.sinkCount
        inputs.queries.withUnsafeBufferPointer { q in
        inputs.keys.withUnsafeBufferPointer { k in
        inputs.values.withUnsafeBufferPointer { v in
        inputs.sinkKeys.withUnsafeBufferPointer { sk in
        inputs.sinkValues.withUnsafeBufferPointer { sv in
        inputs.mask.withUnsafeBufferPointer { m in
        context.withUnsafeMutableBufferPointer { out in
            let coversSinks = spec.mask == .sinksAndTokens
            let segments: [[KeyValueSegment]] = (0..<spec.batch).map { b in
                var list: [KeyValueSegment] = []
                if s > 0 {
                    list.append(KeyValueSegment(keys: sk.baseAddress!, values: sv.baseAddress!, rowStride: kv,
                                                rowCount: s, firstPosition: 0, isSink: true,
                                                firstMaskColumn: coversSinks ? 0 : nil))
                }
                list.append(KeyValueSegment(keys: k.baseAddress! + b * spec.keyCount * kv,
                                            values: v.baseAddress! + b * spec.keyCount * kv, rowStride: kv,
                                            rowCount: spec.keyCount, firstPosition: s, isSink: false,
                                            firstMaskColumn: coversSinks ? s : 0))
                return list
            }
            let width = inputs.maskShape.width
            let problem = AttentionProblem(
                batch: spec.batch, queryCount: spec.queryCount, nHeads: spec.nHeads, numKVHeads: spec.numKVHeads,
                headDim: spec.headDim, queries: q.baseAddress!,
                queryFirstPosition: s + spec.keyCount - spec.queryCount, segments: segments,
                mask: spec.mask == .none ? nil : AdditiveMask(
                    scalars: m.baseAddress!, batchStride: inputs.maskShape.heads * spec.queryCount * width,
                    headStride: inputs.maskShape.heads == 1 ? 0 : spec.queryCount * width, rowStride: width),
                isCausal: spec.causal, scale: 1 / Float(spec.headDim).squareRoot(),
                dropout: spec.dropout.map { DropoutMask(probability: $0, seed: spec.seed) },
                context: out.baseAddress!)
            problem.run(KernelOptions(kernel: kernel, workers: spec.workers, blockSizes: spec.blocks))
        }}}}}}}
        return context
    }

    // MARK: - Rules

    /// Scores spread over ±60 with a ramp in the keys, so the running maximum keeps rising from
    /// one key block to the next and every rescale of the accumulator is exercised.
    func testOnlineSoftmaxRescalesWhenLaterBlocksHoldLargerScores() {
        var spec = Spec(queryCount: 40, keyCount: 200, headDim: 8, amplitude: 3,
                        blocks: FlashBlockSizes(queryBlock: 8, keyBlock: 16))
        for causal in [false, true] {
            spec.causal = causal
            let inputs = Inputs(spec)
            var ramped = inputs
            let kv = spec.numKVHeads * spec.headDim
            for row in 0..<spec.keyCount {
                for e in 0..<kv { ramped.keys[row * kv + e] += Float(row) / 20 }
            }
            for i in 0..<ramped.queries.count { ramped.queries[i] = abs(ramped.queries[i]) }
            let reference = run(spec, ramped, kernel: .reference)
            let flash = run(spec, ramped, kernel: .flash)
            let scale = reference.map(abs).max()!
            let error = zip(flash, reference).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(error, Self.tolerance * max(1, scale), "causal \(causal)")
        }
    }

    /// All scores equal (zero queries), token values 1, sink values 0: a row that sees `n`
    /// tokens and `S` sinks weighs each key `1/(n+S)`, so every context entry is `n/(n+S)`.
    /// A sink counted in every key block, or never, shows up as a different fraction.
    func testSinkIsCountedOnceForEveryBlockSize() {
        let spec = Spec(batch: 1, queryCount: 37, keyCount: 37, sinkCount: 3, nHeads: 2, numKVHeads: 1, headDim: 8,
                        causal: true)
        var inputs = Inputs(spec)
        inputs.queries = inputs.queries.map { _ in 0 }
        inputs.values = inputs.values.map { _ in 1 }
        inputs.sinkValues = inputs.sinkValues.map { _ in 0 }
        for (queryBlock, keyBlock) in [(1, 1), (4, 16), (5, 7), (8, 32), (37, 512), (64, 2)] {
            var blocked = spec
            blocked.blocks = FlashBlockSizes(queryBlock: queryBlock, keyBlock: keyBlock)
            let context = run(blocked, inputs, kernel: .flash)
            for i in 0..<spec.queryCount {
                let n = Float(i + 1)  // causal: token query i sees tokens 0...i
                let expected = n / (n + Float(spec.sinkCount))
                for e in 0..<(spec.nHeads * spec.headDim) {
                    XCTAssertEqual(context[i * spec.nHeads * spec.headDim + e], expected, accuracy: 1e-6,
                                   "row \(i), blocks \(queryBlock)×\(keyBlock)")
                }
            }
        }
    }

    func testFullyMaskedRowsGiveZerosInFlash() {
        let spec = Spec(batch: 2, queryCount: 20, keyCount: 20, sinkCount: 2, causal: true, mask: .sinksAndTokens,
                        blocks: FlashBlockSizes(queryBlock: 8, keyBlock: 16))
        var inputs = Inputs(spec)
        let width = inputs.maskShape.width
        let hiddenRows = [0, 9, 19]
        for b in 0..<spec.batch {
            for row in hiddenRows {
                for j in 0..<width { inputs.mask[(b * spec.queryCount + row) * width + j] = -.infinity }
            }
        }
        let flash = run(spec, inputs, kernel: .flash)
        let rowWidth = spec.nHeads * spec.headDim
        for b in 0..<spec.batch {
            for row in 0..<spec.queryCount {
                let values = flash[((b * spec.queryCount + row) * rowWidth)..<((b * spec.queryCount + row + 1) * rowWidth)]
                if hiddenRows.contains(row) {
                    XCTAssertTrue(values.allSatisfy { $0 == 0 }, "batch \(b) row \(row) must be zeros")
                } else {
                    XCTAssertTrue(values.allSatisfy { $0.isFinite } && values.contains { $0 != 0 }, "batch \(b) row \(row)")
                }
            }
        }
    }

    /// Bitwise: a (batch, head, query block) item is computed start to finish by one worker with
    /// the same sequence of single-threaded sgemms and SIMD passes whichever worker takes it, so
    /// the worker count changes only who computes an item, never how.
    func testFlashIsBitwiseIdenticalAcrossWorkerCounts() {
        for causal in [false, true] {
            var spec = Spec(batch: 2, queryCount: 130, keyCount: 130, sinkCount: 2, nHeads: 4, numKVHeads: 2,
                            causal: causal, mask: .tokens, dropout: 0.1, blocks: FlashBlockSizes(queryBlock: 16, keyBlock: 32))
            let inputs = Inputs(spec)
            spec.workers = 1
            let serial = run(spec, inputs, kernel: .flash)
            for workers in [2, 4] {
                spec.workers = workers
                let parallel = run(spec, inputs, kernel: .flash)
                XCTAssertTrue(serial.elementsEqual(parallel) { $0.bitPattern == $1.bitPattern },
                              "workers \(workers) differ from 1 worker: \(spec)")
            }
        }
    }

    func testFlashLeavesTheOpenBLASThreadCountAsItFoundIt() {
        let saved = BLAS.threadCount
        defer { BLAS.threadCount = saved }
        BLAS.threadCount = 2
        let spec = Spec(queryCount: 64, keyCount: 64, workers: 2)
        _ = run(spec, Inputs(spec), kernel: .flash)
        XCTAssertEqual(BLAS.threadCount, 2)
    }
}
