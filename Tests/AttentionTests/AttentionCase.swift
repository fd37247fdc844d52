import XCTest
@testable import Attention

/// One case of the kernel parameter matrix (in the style of ggml's test-backend-ops): a layer, an
/// input and a way to run it, checked through the public layer API with both kernels against the
/// float64 ``NaiveAttentionOracle`` under the suite's one ``Tolerance``. Its description lists
/// every axis and the seed, so a failure names the case that broke.
///
/// The queries are the last `queryCount` of `keyLength` tokens. Equal lengths without a window
/// run one `forward(_:mask:training:dropoutSeed:kernel:)` over the whole sequence. Otherwise a
/// `KVCache` — linear, or a ring of `window` slots — takes the first `keyLength − queryCount`
/// tokens (in calls of up to ``prefillChunk``), then the queries in one call, which attend over
/// the sinks, the cached tokens and themselves. A cache forward takes no mask, so a mask needs
/// equal lengths and no window (``isValid``).
struct AttentionCase: CustomStringConvertible {
    var headDim = 8
    /// Query heads and key/value heads (`nHeads / numKVHeads` is the group ratio).
    var heads = 2, kvHeads = 2
    /// Token keys each query row attends over (besides the sinks).
    var keyLength = 7
    /// Queries: the last `queryCount` tokens, `1...keyLength`.
    var queryCount = 7
    var batch = 1
    var mask = MaskKind.none
    var sinks = 0
    var causal = true
    /// Sliding window in tokens (a `KVCache(config:batch:window:)`), or `nil`.
    var window: Int? = nil
    /// `config.dropout`; it drops weights only in training mode.
    var dropout: Float = 0
    var training = false
    var rope = RoPE.halfSplit
    var ropeTheta: Float = 10000
    /// `ropeScaling` of the scaled RoPE variants: 0.25 stretches positions 4×, 2 compresses them.
    var ropeScaling: Float = 0.25
    /// MHA configured as `useGQA: true, gqaGroups: nHeads` (it must equal plain MHA).
    var mhaSpelledAsGQA = false
    /// The flash kernel's blocks; `nil` is its automatic choice.
    var blocks: FlashBlockSizes? = nil
    /// `kernelWorkerCount` of both kernels' runs (the reference kernel's projections use it too).
    var workers = 1
    /// Weights, inputs, mask and dropout bits all derive from it.
    var seed: UInt64 = 1

    enum RoPE: CaseIterable, CustomStringConvertible {
        case off, halfSplit, halfSplitScaled, interleaved, interleavedScaled

        var pairing: RoPEPairing { [.interleaved, .interleavedScaled].contains(self) ? .interleaved : .halfSplit }
        var isScaled: Bool { [.halfSplitScaled, .interleavedScaled].contains(self) }

        var description: String {
            switch self {
            case .off: return "off"
            case .halfSplit: return "halfSplit"
            case .halfSplitScaled: return "halfSplit scaled"
            case .interleaved: return "interleaved"
            case .interleavedScaled: return "interleaved scaled"
            }
        }
    }

    /// Mask layouts `forward(_:mask:)` accepts (`N` tokens, `S` sinks, `B` batch, `H` heads).
    /// Entries are 0, finite biases in (−3, 3) or −∞ (about one in eight hidden).
    enum MaskKind: CaseIterable {
        case none
        /// `[N, N]` over the token keys: sinks stay visible.
        case square
        /// `[1, 1, N, N]`.
        case broadcast
        /// `[B, 1, N, N]`, one per batch row.
        case perBatch
        /// `[B, H, N, N]`, one per batch row and head.
        case perHead
        /// `[N, S + N]`, covering (and sometimes hiding) the sinks too.
        case squareWithSinks
        /// `[B, 1, N, S + N]`.
        case perBatchWithSinks
    }

    var maskShape: [Int]? {
        let n = keyLength, s = sinks
        switch mask {
        case .none: return nil
        case .square: return [n, n]
        case .broadcast: return [1, 1, n, n]
        case .perBatch: return [batch, 1, n, n]
        case .perHead: return [batch, heads, n, n]
        case .squareWithSinks: return [n, s + n]
        case .perBatchWithSinks: return [batch, 1, n, s + n]
        }
    }

    /// Whether the queries follow a prefix in a `KVCache` (and so can take no mask).
    var usesCache: Bool { queryCount != keyLength || window != nil }

    var isValid: Bool {
        heads % kvHeads == 0 && (rope == .off || headDim % 2 == 0) && (1...keyLength).contains(queryCount)
            && (mask == .none || !usesCache) && (window ?? 1) >= 1 && (!training || dropout > 0)
    }

    var groupRatio: String {
        kvHeads == heads ? (mhaSpelledAsGQA ? "MHA as useGQA" : "MHA") : kvHeads == 1 ? "MQA" : "GQA"
    }

    var description: String {
        "headDim \(headDim), heads \(heads)/\(kvHeads) \(groupRatio), keys \(keyLength), queries \(queryCount)"
            + "\(usesCache ? " after a cache" : ""), batch \(batch), mask \(maskShape.map { "\($0)" } ?? "none"), "
            + "sinks \(sinks), causal \(causal), window \(window.map(String.init) ?? "none"), "
            + "dropout \(dropout)\(training ? " training" : dropout > 0 ? " eval" : ""), "
            + "rope \(rope)\(rope.isScaled ? " ×\(ropeScaling)" : "")\(rope == .off ? "" : " θ \(ropeTheta)"), "
            + "blocks \(blocks.map { "\($0.queryBlock)×\($0.keyBlock)" } ?? "auto"), workers \(workers), seed \(seed)"
    }

    func makeConfig() throws -> AttentionConfig {
        try AttentionConfig(
            dModel: headDim * heads, nHeads: heads, useRoPE: rope != .off, ropeTheta: ropeTheta,
            ropeScaling: rope.isScaled ? ropeScaling : nil, ropePairing: rope.pairing, useAttentionSinks: sinks > 0,
            numAttentionSinks: max(sinks, 1), useGQA: kvHeads != heads || mhaSpelledAsGQA, gqaGroups: kvHeads,
            dropout: dropout, isCausal: causal)
    }

    /// The layer, every token, the mask and (for ``usesCache``) the cache holding the prefix:
    /// made once, shared by every kernel run of the case.
    struct Setup {
        var layer: MultiHeadAttention
        /// `[batch, keyLength, dModel]`: the prefix, then the queries.
        var tokens: Tensor
        /// `[batch, queryCount, dModel]`, the last rows of `tokens`.
        var queries: Tensor
        var mask: Tensor?
        var prefilledCache: KVCache?
    }

    /// Tokens per call when filling a cache with the prefix.
    static let prefillChunk = 100

    func makeSetup() throws -> Setup {
        let config = try makeConfig()
        var layer = try MultiHeadAttention(config: config, seed: seed)
        if sinks > 0 {
            // PyTorch's N(0, 0.02²) sinks barely move the scores; make them matter.
            try layer.setWeight(randomTensor([sinks, config.dModel], seed: seed ^ 0x51, amplitude: 2), for: .sinkStates)
        }
        let dm = config.dModel, prefixLength = keyLength - queryCount
        let tokens = randomTensor([batch, keyLength, dm], seed: seed ^ 0xA5, amplitude: 2)
        var cache: KVCache?
        if usesCache {
            var prefilled = try window.map { try KVCache(config: config, batch: batch, window: $0) }
                ?? KVCache(config: config, batch: batch, capacity: keyLength)
            // In chunks: the reference kernel scores every (query, key) pair of a call, causal or
            // not, so in a debug build 999 tokens in one call cost twice what chunks of 100 do.
            for start in stride(from: 0, to: prefixLength, by: Self.prefillChunk) {
                let chunk = tokenRows(tokens, start..<min(start + Self.prefillChunk, prefixLength))
                _ = try layer.forward(chunk, cache: &prefilled, kernel: .reference)
            }
            cache = prefilled
        }
        let mask = maskShape.map { shape -> Tensor in
            var generator = SeededGenerator(seed: seed ^ 0x3C)
            return try! Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in
                switch generator.next() % 8 {
                case 0: return -.infinity
                case 1, 2: return generator.nextUniform(bound: 3)
                default: return 0
                }
            })
        }
        return Setup(layer: layer, tokens: tokens, queries: tokenRows(tokens, prefixLength..<keyLength), mask: mask,
                     prefilledCache: cache)
    }

    /// The `[batch, queryCount, dModel]` output of one kernel with `workers` workers.
    func output(_ setup: Setup, kernel: AttentionKernel, workers: Int) throws -> [Float] {
        var layer = setup.layer
        layer.flashBlockSizes = blocks
        layer.kernelWorkerCount = workers
        if var cache = setup.prefilledCache {  // a copy: every run starts from the same prefix
            return try layer.forward(setup.queries, cache: &cache, training: training, dropoutSeed: seed,
                                     kernel: kernel).scalars
        }
        return try layer.forward(setup.tokens, mask: setup.mask, training: training, dropoutSeed: seed,
                                 kernel: kernel).scalars
    }

    /// Both kernels against the float64 oracle; with several workers, the flash output also
    /// bitwise equal to its one-worker output. `label` prefixes every message.
    func check(_ label: String = "", file: StaticString = #filePath, line: UInt = #line) {
        let name = label.isEmpty ? description : "\(label): \(description)"
        guard isValid else { return XCTFail("invalid case: \(name)", file: file, line: line) }
        do {
            let setup = try makeSetup()
            let expected = NaiveAttentionOracle.forward(
                setup.layer, x: setup.tokens, mask: setup.mask, queryCount: queryCount, window: window,
                dropoutSeed: training ? seed : nil)
            let reference = try output(setup, kernel: .reference, workers: workers)
            assertClose(reference, expected, "reference kernel vs float64 oracle, \(name)", file: file, line: line)
            let flash = try output(setup, kernel: .flash, workers: workers)
            assertClose(flash, expected, "flash kernel vs float64 oracle, \(name)", file: file, line: line)
            if workers > 1 {
                let serial = try output(setup, kernel: .flash, workers: 1)
                assertBitwiseEqual(flash, serial, "flash with \(workers) workers vs 1 worker, \(name)",
                                   file: file, line: line)
            }
        } catch {
            XCTFail("\(name): threw \(error)", file: file, line: line)
        }
    }
}

// MARK: - The matrix and the random cases

extension AttentionCase {
    /// `(nHeads, numKVHeads)`: MHA, GQA (2 query heads per kv head), MQA (3 per kv head).
    static let headGroups = [(heads: 2, kvHeads: 2), (heads: 4, kvHeads: 2), (heads: 3, kvHeads: 1)]
    /// Automatic, several blocks per sequence, the smallest (keys round up to one SIMD vector),
    /// and an odd query block.
    static let blockChoices: [FlashBlockSizes?] = [
        nil, FlashBlockSizes(queryBlock: 8, keyBlock: 16), FlashBlockSizes(queryBlock: 1, keyBlock: 1),
        FlashBlockSizes(queryBlock: 7, keyBlock: 16),
    ]
    static let workerChoices = [1, 2, 4]

    /// Windows 1, 4 and 8, and one wider than the keys (the first of them that is, when one is).
    static func windows(keyLength: Int) -> [Int] {
        let candidates = [1, 4, 8, keyLength + 5]
        return candidates.filter { $0 < keyLength } + [candidates.first { $0 >= keyLength }!]
    }

    /// What may hide keys in a `(queryCount, keyLength)` shape: nothing, a window, or (with
    /// every token a query) one of `masks`.
    static func visibilities(queryCount: Int, keyLength: Int, masks: [MaskKind]) -> [(mask: MaskKind, window: Int?)] {
        [(.none, nil)] + windows(keyLength: keyLength).map { (.none, $0) }
            + (queryCount == keyLength ? masks.map { ($0, nil) } : [])
    }

    /// The full product of the semantic axes on headDim 6 (a width that is not a SIMD multiple):
    /// group ratio × (queries, keys) ∈ {7/7, 1/7, 3/7, 1/1} × {nothing, windows 1/4/8, masks
    /// [N,N], [B,H,N,N], [B,1,N,S+N]} × sinks {0, 2} × causal × dropout {off, 0.3 training} ×
    /// every RoPE variant. Batch {1, 2}, block sizes and worker counts rotate through it.
    static var semanticMatrix: [AttentionCase] {
        var cases: [AttentionCase] = []
        let shapes = [(queries: 7, keys: 7), (queries: 1, keys: 7), (queries: 3, keys: 7), (queries: 1, keys: 1)]
        for group in headGroups {
            for shape in shapes {
                let masks: [MaskKind] = shape.keys == 1 ? [.square, .perBatchWithSinks] : [.square, .perHead, .perBatchWithSinks]
                for visibility in visibilities(queryCount: shape.queries, keyLength: shape.keys, masks: masks) {
                    for sinks in [0, 2] {
                        for causal in [true, false] {
                            for dropout: Float in [0, 0.3] {
                                for rope in RoPE.allCases {
                                    let i = cases.count
                                    cases.append(AttentionCase(
                                        headDim: 6, heads: group.heads, kvHeads: group.kvHeads, keyLength: shape.keys,
                                        queryCount: shape.queries, batch: 1 + i % 2, mask: visibility.mask,
                                        sinks: sinks, causal: causal, window: visibility.window, dropout: dropout,
                                        training: dropout > 0, rope: rope, blocks: blockChoices[(i / 2) % 4],
                                        workers: workerChoices[i % 3], seed: UInt64(i + 1)))
                                }
                            }
                        }
                    }
                }
            }
        }
        return cases
    }

    /// The larger axes: every head dim {64, 16, 8, 6, 5, 3} (RoPE off for the odd ones) meets
    /// every shape of {1, 3} queries against 1000 keys (once) and {1, 3, 113} queries against
    /// 113 keys (three times). Every other axis — group ratio, batch, sinks, causal, mask or
    /// window, dropout, RoPE variant and base, block sizes, workers — advances at its own stride
    /// from case to case, so each of its values meets several values of every other axis. Batch 3
    /// only with 113 keys. Then a 1000-token prefill, twice, written out: in a debug build the
    /// oracle's and the kernels' million scores per head cost a second each.
    static var shapeMatrix: [AttentionCase] {
        var cases: [AttentionCase] = []
        let shapes = [(queries: 1, keys: 1000, repeats: 1), (queries: 3, keys: 1000, repeats: 1),
                      (queries: 1, keys: 113, repeats: 3), (queries: 3, keys: 113, repeats: 3),
                      (queries: 113, keys: 113, repeats: 3)]
        for shape in shapes {
            for headDim in [64, 16, 8, 6, 5, 3] {
                for _ in 0..<shape.repeats {
                    let i = cases.count
                    /// Axis values for case `i`: the axis advances every `stride` cases.
                    func rotate<T>(_ values: [T], every stride: Int) -> T { values[(i / stride) % values.count] }
                    let group = rotate(headGroups, every: 1)
                    let visibility = rotate(
                        visibilities(queryCount: shape.queries, keyLength: shape.keys,
                                     masks: MaskKind.allCases.filter { $0 != .none }),
                        every: 2)
                    let dropout: (p: Float, training: Bool) = rotate([(0, false), (0.2, true), (0.5, false), (0.5, true)], every: 3)
                    cases.append(AttentionCase(
                        headDim: headDim, heads: group.heads, kvHeads: group.kvHeads, keyLength: shape.keys,
                        queryCount: shape.queries, batch: rotate(shape.keys == 1000 ? [1, 2] : [1, 2, 3], every: 5),
                        mask: visibility.mask, sinks: rotate([0, 1, 4], every: 2), causal: rotate([true, false], every: 7),
                        window: visibility.window, dropout: dropout.p, training: dropout.training,
                        rope: headDim % 2 == 0 ? rotate(RoPE.allCases, every: 1) : .off,
                        ropeTheta: rotate([10000, 500, 1e6], every: 11), blocks: rotate(blockChoices, every: 1),
                        workers: rotate(workerChoices, every: 2), seed: UInt64(100_000 + i)))
                }
            }
        }
        // Many query and key blocks, the causal diagonal crossing them: MHA under a mask over
        // sinks and tokens with dropout, then MQA under a window of 8 (through a ring cache).
        cases.append(AttentionCase(
            headDim: 8, heads: 2, kvHeads: 2, keyLength: 1000, queryCount: 1000, batch: 1, mask: .perBatchWithSinks,
            sinks: 2, causal: true, dropout: 0.2, training: true, rope: .halfSplitScaled,
            blocks: FlashBlockSizes(queryBlock: 8, keyBlock: 16), workers: 2, seed: 100_900))
        cases.append(AttentionCase(
            headDim: 5, heads: 2, kvHeads: 1, keyLength: 1000, queryCount: 1000, batch: 1, sinks: 1, causal: true,
            window: 8, rope: .off, blocks: FlashBlockSizes(queryBlock: 7, keyBlock: 16), workers: 4, seed: 100_901))
        // Twelve query heads per key/value head (one kv head of twelve, then three of twelve),
        // prefill and decode.
        for (kvHeads, keys, queries) in [(1, 113, 113), (1, 1000, 1), (3, 70, 70), (3, 113, 1)] {
            cases.append(AttentionCase(
                headDim: 8, heads: 12, kvHeads: kvHeads, keyLength: keys, queryCount: queries, batch: 2,
                mask: queries == keys ? .perHead : .none, sinks: 2, causal: true, rope: .interleaved,
                blocks: FlashBlockSizes(queryBlock: 16, keyBlock: 32), workers: 2, seed: 100_910 + UInt64(keys)))
        }
        return cases
    }

    /// A case drawn from the whole space by `seed` (which also seeds its inputs): small layers,
    /// key lengths mostly up to 33, one case in 67 with 113 keys and one in 200 decoding against
    /// 1000.
    static func random(seed: UInt64) -> AttentionCase {
        var g = SeededGenerator(seed: seed)
        func pick<T>(_ choices: [T]) -> T { choices[Int(g.next() % UInt64(choices.count))] }
        var c = AttentionCase(seed: seed)
        c.rope = pick(RoPE.allCases + [.off])
        c.headDim = pick(c.rope == .off ? [2, 3, 4, 5, 6, 8, 16] : [2, 4, 6, 8, 16])
        c.heads = pick([1, 2, 3, 4, 6])
        c.kvHeads = pick((1...c.heads).filter { c.heads % $0 == 0 })
        let rare = g.next() % 200
        c.keyLength = rare == 0 ? 1000 : rare < 3 ? 113 : pick([1, 2, 3, 5, 7, 8, 9, 12, 16, 17, 33])
        if c.keyLength == 1000 {  // decoding only: a long prefill is the shape matrix's, twice
            c.queryCount = pick([1, 3])
            c.batch = pick([1, 2])
        } else {
            c.queryCount = pick([c.keyLength, c.keyLength, 1, min(3, c.keyLength),
                                 Int(1 + g.next() % UInt64(c.keyLength))])
            c.batch = pick([1, 1, 2, 3])
        }
        c.sinks = pick([0, 0, 1, 2, 3])
        c.causal = pick([true, false])
        c.window = pick([nil, nil, nil, 1, 2, 4, 8, c.keyLength + 5])
        c.mask = c.usesCache ? .none : pick([.none, .none] + MaskKind.allCases)
        c.dropout = pick([0, 0, 0, 0.2, 0.5])
        c.training = c.dropout > 0 && pick([true, true, false])
        c.ropeTheta = pick([10000, 500, 1e6])
        c.ropeScaling = pick([0.25, 2])
        c.mhaSpelledAsGQA = c.kvHeads == c.heads && pick([false, true])
        c.blocks = pick([nil, FlashBlockSizes(queryBlock: Int(1 + g.next() % 17), keyBlock: Int(1 + g.next() % 33))])
        c.workers = pick([1, 2, 3, 4])
        return c
    }
}

// MARK: - Gradients

extension AttentionCase {
    /// Whether the layer's pullback covers the case: one forward over the whole sequence (no
    /// cache, no window).
    var isDifferentiable: Bool { isValid && !usesCache && window == nil }

    /// Both kernels' gradients (x, the four projections, the sink states) of `Σ dy ⊙ y` against
    /// the float64 ``BackwardOracle``: the reference backward (the plain fp32 implementation)
    /// under ``Tolerance``, the flash backward under ``Tolerance/gradientBound(plainError:scale:)``
    /// (at most twice the reference's error, plus a floor); with several workers, the flash
    /// gradients also bitwise equal to its one-worker gradients.
    func checkGradients(_ label: String = "", file: StaticString = #filePath, line: UInt = #line) {
        let name = label.isEmpty ? description : "\(label): \(description)"
        guard isDifferentiable else { return XCTFail("not differentiable: \(name)", file: file, line: line) }
        do {
            let setup = try makeSetup()
            let x = setup.tokens, dm = x.shape[2]
            let dy = randomTensor(x.shape, seed: seed ^ 0xD7)
            let expected = BackwardOracle(setup.layer).backward(
                x.scalars.map(Double.init), batch: batch, seq: keyLength, dy: dy.scalars.map(Double.init),
                mask: setup.mask, dropoutSeed: training ? seed : nil)
            func gradients(_ kernel: AttentionKernel, workers: Int) throws -> LayerGradients {
                var layer = setup.layer
                layer.flashBlockSizes = blocks
                layer.kernelWorkerCount = workers
                return try layer.layerGradients(x, mask: setup.mask, training: training, dropoutSeed: seed, dy: dy,
                                                kernel: kernel).gradients
            }
            let reference = try gradients(.reference, workers: workers)
            let flash = try gradients(.flash, workers: workers)
            let serial = workers > 1 ? try gradients(.flash, workers: 1) : nil
            var labels: [(String, [Float]?, [Float]?, [Float]?, [Double])] = [
                ("dx", reference.input, flash.input, serial?.input, expected.gradients.input),
            ]
            for parameter in AttentionParameter.allCases where parameter != .sinkStates || sinks > 0 {
                labels.append(("d\(parameter.rawValue)", reference[parameter], flash[parameter], serial?[parameter],
                               expected.gradients[parameter]))
            }
            XCTAssertEqual(expected.gradients.input.count, batch * keyLength * dm, name, file: file, line: line)
            for (gradient, plain, fast, oneWorker, oracle) in labels {
                guard let plain, let fast else {
                    XCTFail("\(name): \(gradient) missing", file: file, line: line)
                    continue
                }
                assertClose(plain, oracle, "reference backward vs float64 oracle, \(gradient), \(name)",
                            file: file, line: line)
                assertGradientClose(fast, plain: plain, oracle, "flash backward vs float64 oracle, \(gradient), \(name)",
                                    file: file, line: line)
                if let oneWorker {
                    assertBitwiseEqual(fast, oneWorker, "flash \(gradient) with \(workers) workers vs 1, \(name)",
                                       file: file, line: line)
                }
            }
        } catch {
            XCTFail("\(name): threw \(error)", file: file, line: line)
        }
    }

    /// The backward matrix: every token a query (the pullback's shape), key lengths 1, 7 and
    /// 113; each length meets every group ratio, every mask kind (over the tokens, over sinks
    /// and tokens, per batch row and head), sinks {0, 1, 3}, causal or not, dropout {off, 0.2
    /// training, 0.5 eval}, every RoPE variant, batch {1, 2, 3}, block sizes and workers, each
    /// axis advancing at its own stride.
    static var backwardMatrix: [AttentionCase] {
        var cases: [AttentionCase] = []
        for (keys, count) in [(1, 8), (7, 14), (113, 8)] {
            for _ in 0..<count {
                let i = cases.count
                func rotate<T>(_ values: [T], every stride: Int) -> T { values[(i / stride) % values.count] }
                let group = rotate(headGroups, every: 1)
                let dropout: (p: Float, training: Bool) = rotate([(0, false), (0.2, true), (0.5, false)], every: 4)
                // Strides chosen so that no two axes move in lockstep (MQA meets batch 1, every
                // worker count meets every group ratio).
                cases.append(AttentionCase(
                    headDim: rotate([8, 6], every: 6), heads: group.heads, kvHeads: group.kvHeads, keyLength: keys,
                    queryCount: keys, batch: rotate([1, 2, 3], every: 3), mask: rotate(MaskKind.allCases, every: 1),
                    sinks: rotate([0, 1, 3], every: 2), causal: rotate([true, false], every: 5), dropout: dropout.p,
                    training: dropout.training, rope: rotate(RoPE.allCases, every: 1),
                    blocks: rotate(blockChoices, every: 3), workers: rotate(workerChoices, every: 7),
                    seed: UInt64(200_000 + i)))
            }
        }
        return cases
    }
}
