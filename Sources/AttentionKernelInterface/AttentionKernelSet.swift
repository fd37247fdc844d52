/// What every CPU level's copy of the hot loops provides.
///
/// `Sources/AttentionKernels` holds the loops once; SwiftPM compiles that folder three times,
/// as `AttentionKernelsBaseline` (the app's target CPU), `AttentionKernelsAVX2` (x86-64-v3:
/// AVX2 + FMA) and `AttentionKernelsAVX512` (x86-64-v4), each module's `LevelKernels`
/// conforming to this protocol. `Attention` picks one conformance per process (`CPULevel`)
/// and calls it through this protocol, so no code above the chosen level is reached.
///
/// This module holds declarations only (and integer helpers with no vector code), so it is
/// compiled with the app's own flags like any target.
public protocol AttentionKernelSet: Sendable {
    /// One online-softmax step of one query row over one key block (DESIGN.md §3, flash):
    ///
    ///     s_j += log₂e · mask_j                      (when `step.mask` is given)
    ///     s_j  = −∞ outside `step.visible` and in the padding up to `step.paddedCount`
    ///     m'   = max(m, max_j s_j);  p_j = 2^(s_j − m');  l' = l·2^(m − m') + Σ_j p_j
    ///     O    = O·2^(m − m');  p_j *= dropout factor  (when `step.dropout` is given)
    ///
    /// Scores are base 2. On return `row[0..<count]` holds `P`, `m` and `l` are updated and
    /// `O` (`[headDim]`) is rescaled; adding `P·V` to `O` is the caller's. A row that has seen
    /// nothing (`m'` still −∞) leaves `P = 0` and `O`, `m`, `l` untouched; a block of NaN scores
    /// makes `m` NaN, so the row ends NaN rather than as "saw nothing" zeros.
    static func softmaxStep(_ step: SoftmaxStep)

    /// One query row of one (query block, key block) of the flash backward (DESIGN.md §3b),
    /// from its base-2 scores `s` and `dP̃ = dO·Vᵀ`:
    ///
    ///     s_j += log₂e · mask_j                      (when `step.mask` is given)
    ///     s_j  = −∞ outside `step.visible` and in the padding up to `step.paddedCount`
    ///     p_j  = 2^(s_j − L₂);  z_j = dropout factor (1 without dropout)
    ///     P̃_j = p_j · z_j;     dS_j = p_j · (dP̃_j · z_j − D)
    ///
    /// with `L₂` the row's log-sum-exp in base 2 (`+∞` for a row that sees nothing, so that
    /// `p = 0`) and `D = dO·O`. On return `scores[0..<paddedCount]` holds `P̃` and
    /// `gradient[0..<paddedCount]` holds `dS`, both exactly 0 wherever `p` is 0 (hidden keys,
    /// padding columns, rows that see nothing); NaN scores stay NaN.
    static func backwardStep(_ step: BackwardStep)

    /// `scores[m · scoreStride + j] = Σₑ queries[m · headDim + e] · keys[j · keyStride + e]`
    /// for `m < members`, `j < count`, any `headDim ≥ 1`: a decoding query's scores for every
    /// head of its GQA group, each key element loaded once for several heads.
    static func dotProducts(
        queries: UnsafePointer<Float>, members: Int, headDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int)

    /// `target[0..<count] = source[0..<count] · factor`; `source` may equal `target`.
    static func scale(_ source: UnsafePointer<Float>, count: Int, by factor: Float,
                      into target: UnsafeMutablePointer<Float>)

    /// `2ˣ`, the kernels' exponential (within 3 ulp of `exp2f` on `[−126, 127]`, exactly 0
    /// below `−126`), for the split-KV merge's chunk weights.
    static func exp2(_ x: Float) -> Float

    /// Rotates every head of `rows` rows in place by RoPE (DESIGN.md §3):
    /// `a' = a·cos θ − b·sin θ`, `b' = a·sin θ + b·cos θ` for each pair `(a, b)`.
    ///
    /// - Parameters:
    ///   - heads: `[rows, headCount · headDim]` with row stride `rowStride`.
    ///   - cosines, sines: `[tableRows, headDim / 2]`; row `r` uses table row `r % tableRows`.
    ///   - halfSplit: pairs `i` with `i + headDim/2`; otherwise `2i` with `2i + 1`.
    static func rotate(
        _ heads: UnsafeMutablePointer<Float>, rows: Int, rowStride: Int, headCount: Int, headDim: Int,
        cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>, tableRows: Int, halfSplit: Bool)
}

/// The arguments of ``AttentionKernelSet/backwardStep(_:)``.
public struct BackwardStep {
    /// Base-2 scores `[paddedCount]`; `P̃` on return.
    public var scores: UnsafeMutablePointer<Float>
    /// `dP̃` `[paddedCount]` (only `count` read); `dS` on return.
    public var gradient: UnsafeMutablePointer<Float>
    /// Keys in the block.
    public var count: Int
    /// `count` rounded up to whole ``SoftmaxStep/vectorWidth`` vectors; both rows must hold it.
    public var paddedCount: Int
    /// Columns the causal and window rules let this row see.
    public var visible: Range<Int>
    /// The additive mask's `count` values for this row and block (natural log scale).
    public var mask: UnsafePointer<Float>?
    /// The row's log-sum-exp `L · log₂e`.
    public var logSumExp: Float
    /// `D = dO·O` of the row.
    public var outputDot: Float
    public var dropout: DropoutRow?

    public init(
        scores: UnsafeMutablePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int, paddedCount: Int,
        visible: Range<Int>, mask: UnsafePointer<Float>?, logSumExp: Float, outputDot: Float, dropout: DropoutRow?
    ) {
        self.scores = scores
        self.gradient = gradient
        self.count = count
        self.paddedCount = paddedCount
        self.visible = visible
        self.mask = mask
        self.logSumExp = logSumExp
        self.outputDot = outputDot
        self.dropout = dropout
    }
}

/// The arguments of ``AttentionKernelSet/softmaxStep(_:)``.
public struct SoftmaxStep {
    /// Base-2 scores `[paddedCount]`; `P` on return.
    public var row: UnsafeMutablePointer<Float>
    /// Keys in the block.
    public var count: Int
    /// `count` rounded up to whole ``SoftmaxStep/vectorWidth`` vectors; the padding is
    /// written (−∞, then 0) and must be allocated.
    public var paddedCount: Int
    /// Columns the causal and window rules let this row see.
    public var visible: Range<Int>
    /// The additive mask's `count` values for this row and block (natural log scale).
    public var mask: UnsafePointer<Float>?
    /// The row's running maximum `m` and sum `l`.
    public var rowMax: UnsafeMutablePointer<Float>
    public var rowSum: UnsafeMutablePointer<Float>
    /// The row's output accumulator `O`, `[headDim]`.
    public var accumulator: UnsafeMutablePointer<Float>
    public var headDim: Int
    public var dropout: DropoutRow?

    /// Scores are processed in vectors of this many; `paddedCount` is a multiple of it.
    public static let vectorWidth = 16

    public init(
        row: UnsafeMutablePointer<Float>, count: Int, paddedCount: Int, visible: Range<Int>,
        mask: UnsafePointer<Float>?, rowMax: UnsafeMutablePointer<Float>, rowSum: UnsafeMutablePointer<Float>,
        accumulator: UnsafeMutablePointer<Float>, headDim: Int, dropout: DropoutRow?
    ) {
        self.row = row
        self.count = count
        self.paddedCount = paddedCount
        self.visible = visible
        self.mask = mask
        self.rowMax = rowMax
        self.rowSum = rowSum
        self.accumulator = accumulator
        self.headDim = headDim
        self.dropout = dropout
    }
}

/// Dropout for one query row: weight `j` survives, scaled by `keepScale`, when the top 32 bits
/// of `SplitMix64.mix(rowKey ^ (firstKeyPosition + j))` are `≥ threshold`.
public struct DropoutRow {
    public var rowKey: UInt64
    public var threshold: UInt64
    public var keepScale: Float
    public var firstKeyPosition: Int

    public init(rowKey: UInt64, threshold: UInt64, keepScale: Float, firstKeyPosition: Int) {
        self.rowKey = rowKey
        self.threshold = threshold
        self.keepScale = keepScale
        self.firstKeyPosition = firstKeyPosition
    }

    /// The factor for the weight at `keyPosition`: `keepScale` or `0`.
    @inlinable @inline(__always)
    public func factor(keyPosition: Int) -> Float {
        let bits = SplitMix64.mix(rowKey ^ UInt64(truncatingIfNeeded: keyPosition)) >> 32
        return bits >= threshold ? keepScale : 0
    }
}

/// SplitMix64's finaliser: a bijection on 64 bits with full avalanche. Dropout's counter hash
/// and the seeded weight initialiser both use it, so they live here, beside the kernels.
public enum SplitMix64 {
    @inlinable @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
