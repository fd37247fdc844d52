import Attention

/// What one benchmark run measures: the layer's shape and which sequence lengths, thread counts
/// and kernels it sweeps.
///
/// Legend: `B` batch, `N` tokens, `H` query heads, `Hkv` key/value heads, `D = dModel / H`,
/// `S` sinks, `kvDim = Hkv · D`.
public struct Workload: Sendable, Equatable, Codable {
    /// The full `MultiHeadAttention.forward` or `scaledDotProductAttention` alone.
    public enum Mode: String, Sendable, Codable, CaseIterable {
        /// Projections, RoPE, sinks and the attention kernel: `MultiHeadAttention.forward`.
        case forward
        /// The kernel alone on `[B, N, H·D]` queries and `[B, N, Hkv·D]` keys and values:
        /// `scaledDotProductAttention(...)`. No projections, RoPE or sinks.
        case attentionOnly = "attention-only"
    }

    public var mode: Mode
    public var batch: Int
    public var dModel: Int
    public var heads: Int
    public var kvHeads: Int
    /// `S`; always 0 in `.attentionOnly` mode.
    public var sinks: Int
    /// RoPE on queries and keys; always `false` in `.attentionOnly` mode.
    public var rope: Bool
    public var causal: Bool
    /// Sequence lengths `N`, measured in this order.
    public var sequenceLengths: [Int]
    /// OpenBLAS thread counts; each is also the flash kernel's worker count.
    public var threadCounts: [Int]
    /// Kernels measured side by side (interleaved) at each (N, threads).
    public var kernels: [BenchKernel]
    /// Timed calls per (N, threads, kernel); the median is reported.
    public var iterations: Int
    /// Untimed calls per (N, threads, kernel) before timing.
    public var warmup: Int
    /// Stop timing an (N, threads) pair early, after at least 3 rounds, once its timed calls
    /// have taken this many seconds; 0 always runs ``iterations`` rounds.
    public var maxSeconds: Double
    /// Size of the square sgemm whose rate is measured first; 0 skips that measurement.
    public var sgemmSize: Int
    /// Seed of the inputs and weights.
    public var seed: UInt64
    /// `nil`: the prefill workload above. Otherwise a decode benchmark (`--decode`): the
    /// sequence lengths are cache lengths, and each timed call is one token against them; see
    /// ``DecodeSettings``. (Optional so that the JSON of a prefill run has no such key.)
    public var decode: DecodeSettings?
    /// `true` (`--backward`): each call is the layer's forward and its pullback
    /// (`forwardWithPullback`, then the pullback of a fixed `dy`). Optional so that the JSON of
    /// a forward-only run has no such key.
    public var backward: Bool?

    /// Whether calls include the backward pass.
    public var timesBackward: Bool { backward == true }

    public init(
        mode: Mode, batch: Int, dModel: Int, heads: Int, kvHeads: Int, sinks: Int, rope: Bool,
        causal: Bool, sequenceLengths: [Int], threadCounts: [Int], kernels: [BenchKernel],
        iterations: Int, warmup: Int, maxSeconds: Double, sgemmSize: Int, seed: UInt64,
        decode: DecodeSettings? = nil, backward: Bool? = nil
    ) {
        self.mode = mode
        self.batch = batch
        self.dModel = dModel
        self.heads = heads
        self.kvHeads = kvHeads
        self.sinks = sinks
        self.rope = rope
        self.causal = causal
        self.sequenceLengths = sequenceLengths
        self.threadCounts = threadCounts
        self.kernels = kernels
        self.iterations = iterations
        self.warmup = warmup
        self.maxSeconds = maxSeconds
        self.sgemmSize = sgemmSize
        self.seed = seed
        self.decode = decode
        self.backward = backward
    }

    public var headDim: Int { dModel / heads }
    public var kvDim: Int { kvHeads * headDim }

    /// Visible (query, key) pairs of one (batch row, head): `N·S` sink entries, plus `N²`
    /// token entries, or `N(N+1)/2` under the causal rule (query `i` sees keys `0...i`).
    public func visibleScores(sequenceLength n: Int) -> Double {
        let n = Double(n)
        return n * Double(sinks) + (causal ? n * (n + 1) / 2 : n * n)
    }

    /// Floating-point operations of one call, counting each multiply and add:
    ///
    ///     attention   = 4·B·H·D·visibleScores(N)        (Q·Kᵀ and P·V, 2 flops per entry each)
    ///     projections = 2·B·N·dModel·(dModel + 2·kvDim + dModel) + 2·S·dModel·2·kvDim
    ///
    /// `.forward` counts both; `.attentionOnly` counts the attention term alone. RoPE, masking
    /// and softmax are not counted. With ``backward``, the backward adds `10·B·H·D·visibleScores`
    /// for attention (dV, dP, dQ, dK: `P̃ᵀ·dO`, `dO·Vᵀ`, `dS·K`, `dSᵀ·Q`, and recomputing `Q·Kᵀ`)
    /// and twice the projections (the weights' and the inputs' gradients).
    public func flops(sequenceLength n: Int) -> Double {
        let perScore = timesBackward ? 14.0 : 4.0
        let attention = perScore * Double(batch * heads * headDim) * visibleScores(sequenceLength: n)
        guard mode == .forward else { return attention }
        let tokens = 2 * Double(batch * n) * Double(dModel) * Double(dModel + 2 * kvDim + dModel)
        let sinkProjections = 2 * Double(sinks) * Double(dModel) * Double(2 * kvDim)
        return (tokens + sinkProjections) * (timesBackward ? 3 : 1) + attention
    }

    /// The layer configuration `.forward` runs.
    func attentionConfig() throws -> AttentionConfig {
        try AttentionConfig(
            dModel: dModel, nHeads: heads, useRoPE: rope,
            useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1),
            useGQA: kvHeads != heads, gqaGroups: kvHeads != heads ? kvHeads : nil,
            dropout: 0, useFlashAttention: true, isCausal: causal)
    }

    /// The same layer without GQA (`numKVHeads = nHeads`): what the cache would cost without it.
    func attentionConfigWithoutGQA() throws -> AttentionConfig {
        var plain = self
        plain.kvHeads = heads
        return try plain.attentionConfig()
    }

    /// Bytes of the score matrix the reference kernel materialises for one batch row.
    func referenceScoreBytes(sequenceLength n: Int) -> Double {
        Double(n) * Double(n + sinks) * Double(MemoryLayout<Float>.size)
    }
}

/// The decode benchmark (`attention-bench --decode`): per cache length `N` (the workload's
/// sequence lengths), thread count and key split, the median time of one decoding step.
///
/// - `.forward` mode (layer rows, then kernel rows): a linear ``KVCache`` is prefilled once with
///   `N` tokens per configuration, then each timed call is `MultiHeadAttention.forward` of one
///   new token per batch row against it (the cache grows by one token per call, so the timed
///   calls see `N` plus the warm-up calls and up to `iterations − 1` more cached tokens; the
///   warm-up lasts at least 0.1 s).
/// - Kernel rows (both modes; alone with `.attentionOnly`): `scaledDotProductAttention` with
///   one query `[B, 1, H·D]` against head-major `[B, Hkv, N, D]` keys and values (the layout
///   of a ``KVCache`` and of a PyTorch cache), not causal (the query sees every key).
///
/// Both run the flash kernel with its key split off (`KeySplit.never`) and at
/// `.chunks(keyChunksPerThread · threads)`, interleaved.
public struct DecodeSettings: Sendable, Equatable, Codable {
    /// Key chunks per worker of the split rows: `KeySplit.chunks(keyChunksPerThread · threads)`.
    public var keyChunksPerThread: Int

    public init(keyChunksPerThread: Int = 4) {
        self.keyChunksPerThread = keyChunksPerThread
    }
}

/// A kernel as the benchmark names it.
public enum BenchKernel: String, Sendable, Codable, CaseIterable {
    case flash
    case reference

    var attentionKernel: AttentionKernel {
        switch self {
        case .flash: return .flash
        case .reference: return .reference
        }
    }
}
