/// A run of key/value rows that the attention kernels read in place.
///
/// Keys and values arrive as a short list of segments rather than one concatenated matrix:
/// sinks are the first segment, this call's tokens the last, and a cache can add segments in
/// between. A new source of keys needs no copy and no new kernel.
struct KeyValueSegment: @unchecked Sendable {
    /// Row 0 of key/value head 0 of the keys (post-RoPE).
    var keys: UnsafePointer<Float>
    /// Row 0 of key/value head 0 of the matching values.
    var values: UnsafePointer<Float>
    /// Elements between consecutive rows of `keys` and of `values`.
    var rowStride: Int
    /// Elements between key/value heads: `nil` when heads are column slices of a row
    /// (`[rows, numKVHeads · headDim]`, as projections write them), `capacity · headDim` in a
    /// head-major cache (`[numKVHeads, capacity, headDim]`, each head's rows contiguous).
    var headStride: Int? = nil
    var rowCount: Int
    /// RoPE position of row 0; row `r` sits at `firstPosition + r`.
    var firstPosition: Int
    /// Sinks are visible to every query: neither the causal rule nor the window hides them.
    var isSink: Bool
    /// Mask column of row 0, or `nil` when the additive mask does not cover this segment
    /// (its additive term is then 0).
    var firstMaskColumn: Int?

    /// Offset of key/value head `kvHead` from row 0 of head 0.
    @inline(__always)
    func headOffset(_ kvHead: Int, headDim: Int) -> Int { kvHead * (headStride ?? headDim) }
}

/// An additive mask viewed as `[batch, heads, queries, width]` with broadcast strides.
struct AdditiveMask: @unchecked Sendable {
    var scalars: UnsafePointer<Float>
    /// 0 when one mask serves every batch row.
    var batchStride: Int
    /// 0 when one mask serves every head.
    var headStride: Int
    /// Elements between consecutive query rows; also the number of columns.
    var rowStride: Int

    @inline(__always)
    func row(batch: Int, head: Int, query: Int) -> UnsafePointer<Float> {
        scalars + batch * batchStride + head * headStride + query * rowStride
    }
}

/// Everything an attention kernel reads and writes for one call, post projection and post RoPE.
///
///     context[b, i, h] = Σ_j P[b, h, i, j] · V[b, j, h / groupSize]
///     P[b, h, i, :] = dropout(softmax(scale · Q[b, i, h] · K[b, :, h / groupSize]ᵀ + mask[b, h, i, :]))
///
/// with keys `j` running over every segment of `segments[b]` in order. Visibility is by RoPE
/// position (``visibleTokenPositions(forQueryAt:)``); sinks are always visible. A row that sees
/// no key, and a padding row `i >= queryCounts[b]`, is left as zeros.
///
/// `@unchecked Sendable`: the pointers stay valid for the whole kernel call, inputs are only
/// read, and parallel workers write disjoint (batch, head, query block) slices of `context`.
struct AttentionProblem: @unchecked Sendable {
    var batch: Int
    /// Query rows per batch row (the padded length when rows differ).
    var queryCount: Int
    var nHeads: Int
    var numKVHeads: Int
    var headDim: Int
    /// `[batch, queryCount, nHeads * headDim]`, rows contiguous.
    var queries: UnsafePointer<Float>
    /// RoPE position of query row 0 of each batch row; row `i` sits at `first + i`.
    var queryFirstPositions: [Int]
    /// Real (unpadded) query rows of each batch row; rows past it are padding and get zeros.
    var queryCounts: [Int]
    /// `segments[b]`: the keys and values batch row `b` attends over.
    var segments: [[KeyValueSegment]]
    var mask: AdditiveMask?
    var isCausal: Bool
    /// Sliding window: a query at position `p` sees token keys at positions `> p − window`.
    var window: Int?
    var scale: Float
    var dropout: DropoutMask?
    /// `[batch, queryCount, nHeads * headDim]`, fully overwritten.
    var context: UnsafeMutablePointer<Float>
    /// When set, the flash kernel also writes each row's log-sum-exp of its scores, natural
    /// log, `[batch, nHeads, queryCount]`: `+∞` for a row that sees nothing and for padding
    /// rows, so that `exp(s − L)` is 0 there (the backward recomputes `P` from it).
    var logSumExp: UnsafeMutablePointer<Float>? = nil

    /// A problem whose batch rows all start at `queryFirstPosition` with `queryCount` real rows.
    init(
        batch: Int, queryCount: Int, nHeads: Int, numKVHeads: Int, headDim: Int,
        queries: UnsafePointer<Float>, queryFirstPosition: Int, segments: [[KeyValueSegment]],
        mask: AdditiveMask?, isCausal: Bool, window: Int? = nil, scale: Float, dropout: DropoutMask?,
        context: UnsafeMutablePointer<Float>
    ) {
        self.init(batch: batch, queryCount: queryCount, nHeads: nHeads, numKVHeads: numKVHeads,
                  headDim: headDim, queries: queries,
                  queryFirstPositions: Array(repeating: queryFirstPosition, count: batch),
                  queryCounts: Array(repeating: queryCount, count: batch), segments: segments,
                  mask: mask, isCausal: isCausal, window: window, scale: scale, dropout: dropout,
                  context: context)
    }

    init(
        batch: Int, queryCount: Int, nHeads: Int, numKVHeads: Int, headDim: Int,
        queries: UnsafePointer<Float>, queryFirstPositions: [Int], queryCounts: [Int],
        segments: [[KeyValueSegment]], mask: AdditiveMask?, isCausal: Bool, window: Int?,
        scale: Float, dropout: DropoutMask?, context: UnsafeMutablePointer<Float>
    ) {
        self.batch = batch
        self.queryCount = queryCount
        self.nHeads = nHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.queries = queries
        self.queryFirstPositions = queryFirstPositions
        self.queryCounts = queryCounts
        self.segments = segments
        self.mask = mask
        self.isCausal = isCausal
        self.window = window
        self.scale = scale
        self.dropout = dropout
        self.context = context
    }

    var queryRowStride: Int { nHeads * headDim }
    var groupSize: Int { nHeads / numKVHeads }

    /// Token-key positions a query at `queryPosition` may see: the causal rule hides later
    /// positions, the sliding window positions `<= queryPosition − window`. Sinks are exempt
    /// from both.
    ///
    /// Unbounded sides are ±2⁶², far past any position (positions fit 32 bits), so callers can
    /// subtract positions from the bounds without overflow.
    @inline(__always)
    func visibleTokenPositions(forQueryAt queryPosition: Int) -> ClosedRange<Int> {
        let unbounded = 1 << 62
        let lowest = window.map { queryPosition - $0 + 1 } ?? -unbounded
        let highest = isCausal ? queryPosition : unbounded
        return lowest...max(lowest, highest)
    }

    /// Whether key position `keyPosition` of `segment` is hidden from the query at
    /// `queryPosition` by the causal or window rule.
    @inline(__always)
    func isHidden(_ segment: KeyValueSegment, keyPosition: Int, queryPosition: Int) -> Bool {
        !segment.isSink && !visibleTokenPositions(forQueryAt: queryPosition).contains(keyPosition)
    }
}

/// How one kernel call runs: everything a caller may choose besides the problem itself.
struct KernelOptions: Sendable, Equatable {
    var kernel: AttentionKernel = .flash
    /// Workers of either kernel; `nil` means one per active processor (``FlashAttention/defaultWorkerCount``).
    var workers: Int? = nil
    /// How the flash kernel splits one (batch row, head)'s keys across workers.
    var keySplit: KeySplit = .automatic
    /// The flash kernel's blocks; `nil` chooses them from the query count.
    var blockSizes: FlashBlockSizes? = nil
}

extension AttentionProblem {
    /// Runs the kernel `options` names on this problem: the one entry point of both kernels,
    /// for ``MultiHeadAttention``, ``scaledDotProductAttention(queries:keys:values:nHeads:numKVHeads:scale:isCausal:mask:kernel:workers:keySplit:)``
    /// and the tests. Overwrites `context`.
    ///
    /// Both kernels parallelise over their own work items on `options.workers` workers; every
    /// BLAS product inside runs on one OpenBLAS thread, so the two never oversubscribe the cores.
    func run(_ options: KernelOptions) {
        let workers = max(1, options.workers ?? FlashAttention.defaultWorkerCount)
        BLAS.withSingleThreadedCalls {
            switch options.kernel {
            case .flash: FlashAttention.run(self, options: options)
            case .reference: ReferenceAttention.run(self, workers: workers)
            }
        }
    }

    /// One count a kernel call hands BLAS as a 32-bit `blasint`, named as the caller's error
    /// message shows it, e.g. `("batch · seq", "2 · 3", 6)`.
    typealias BLASCount = (name: String, shown: String, value: Int)

    /// Throws ``AttentionError/sizeLimitExceeded(_:)`` for the first of `counts` above
    /// ``AttentionLimits/maxDimension`` ("`name` (`shown`) must be <= …, BLAS's 32-bit size
    /// limit"), or when the `[queries, keys]` score matrix of one (batch row, head), called
    /// `scoreMatrix` in the message, cannot be counted in `Int`. Called before anything is
    /// allocated, by every entry point that builds a problem.
    static func checkSizes(_ counts: [BLASCount], scoreMatrix: String, queries: Int, keys: Int) throws {
        let limit = AttentionLimits.maxDimension
        if let count = counts.first(where: { $0.value > limit }) {
            throw AttentionError.sizeLimitExceeded(
                "\(count.name) (\(count.shown)) must be <= \(limit), BLAS's 32-bit size limit")
        }
        _ = try checkedElementCount([queries, keys], of: scoreMatrix)
    }

    /// The sum of `parts`, saturating just past ``AttentionLimits/maxDimension``, so that
    /// counts near `Int.max` reach ``checkSizes(_:scoreMatrix:queries:keys:)``'s message instead
    /// of overflowing.
    static func limitedSum(_ parts: [Int]) -> Int {
        let cap = AttentionLimits.maxDimension + 1
        return parts.reduce(0) { min(cap, $0 + min($1, cap)) }
    }
}

/// An additive mask that passed ``MaskLayout/validate(_:batch:heads:queryCount:sinkCount:)``,
/// with its layout.
struct ValidatedMask: Sendable {
    let tensor: Tensor
    let layout: MaskLayout

    /// Runs `body` with the mask viewed as the kernels read it, valid for the call.
    func withAdditiveMask<Result>(_ body: (AdditiveMask) throws -> Result) rethrows -> Result {
        try tensor.scalars.withUnsafeBufferPointer { scalars in
            try body(AdditiveMask(scalars: scalars.baseAddress!, batchStride: layout.batchStride,
                                  headStride: layout.headStride, rowStride: layout.width))
        }
    }
}

extension Optional where Wrapped == ValidatedMask {
    /// `body(nil)` without a mask.
    func withAdditiveMask<Result>(_ body: (AdditiveMask?) throws -> Result) rethrows -> Result {
        guard let mask = self else { return try body(nil) }
        return try mask.withAdditiveMask { try body($0) }
    }
}
