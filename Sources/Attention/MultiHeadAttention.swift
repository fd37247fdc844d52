/// Which attention kernel runs between the projections.
public enum AttentionKernel: Sendable, Hashable, CaseIterable {
    /// Blocked online-softmax kernel (DESIGN.md §4): O(N) extra memory, parallel over
    /// (batch, head, query block).
    case flash
    /// Materialises every score per (batch, head); the readable oracle.
    case reference
}

/// Multi-head self-attention with RoPE, grouped-query attention, attention sinks, masks and
/// dropout: the Swift counterpart of a PyTorch attention `nn.Module`.
///
/// Shapes (`B` batch, `N` tokens, `H` query heads, `Hkv` key/value heads, `D` head width,
/// `S` sinks):
///
///     Q = x · qProjᵀ        [B, N, H·D]        K = x · kProjᵀ, V = x · vProjᵀ   [B, N, Hkv·D]
///     Q, K ← RoPE at positions S + t           sinks: sinkStates · kProjᵀ at positions 0..<S
///     context_h = softmax(Q_h · [K_sink; K]_kvᵀ / √D + mask) · [V_sink; V]_kv,  kv = h / (H/Hkv)
///     out = context · outProjᵀ                 [B, N, dModel]
///
/// Keys and values are never repeated per query head ("not pre-tiled"). A value of this type
/// is immutable during `forward`, so one instance may serve many threads at once.
public struct MultiHeadAttention: Sendable {
    /// The validated hyper-parameters.
    public let config: AttentionConfig
    /// `dModel / nHeads`.
    public var headDim: Int { config.headDim }
    /// Number of query heads, `nHeads`.
    public var numQHeads: Int { config.nHeads }
    /// Number of key/value heads: `gqaGroups` with GQA, else `nHeads`.
    public var numKVHeads: Int { config.numKVHeads }
    /// Score scale `1/√headDim`.
    public var scale: Float { 1 / Float(config.headDim).squareRoot() }

    /// Query projection `[dModel, dModel]` (`[out, in]`, `q = x · qProjᵀ`).
    public internal(set) var qProj: Tensor
    /// Key projection `[numKVHeads · headDim, dModel]`.
    public internal(set) var kProj: Tensor
    /// Value projection `[numKVHeads · headDim, dModel]`.
    public internal(set) var vProj: Tensor
    /// Output projection `[dModel, dModel]`.
    public internal(set) var outProj: Tensor
    /// Learnable sink tokens `[numAttentionSinks, dModel]`, or `nil` without sinks. They are
    /// projected by `kProj`/`vProj` and prepended to every sequence's keys and values.
    public internal(set) var sinkStates: Tensor?

    /// Workers a `forward` runs on: the whole layer's parallelism. `nil` (the default) means one
    /// per active processor.
    ///
    /// The projections are cut into blocks of 128 rows per weight (up to 4 tokens: slices of
    /// output features) and the kernels into (batch, head, query block) items, shared out among
    /// these workers; every BLAS product inside is a one-thread OpenBLAS call, so a `forward`
    /// never wakes OpenBLAS's own pool and ``BLAS/threadCount`` does not change what it
    /// computes or how fast. Results are bitwise identical for every worker count.
    public var kernelWorkerCount: Int?

    /// How the flash kernel splits a (batch row, head)'s keys across workers when only a few
    /// queries run (decoding against a cache): ``KeySplit/automatic`` by default.
    public var keySplit: KeySplit = .automatic

    /// `sinkStates · kProjᵀ` with RoPE at positions `0..<S`, and `sinkStates · vProjᵀ`, each
    /// `[S, numKVHeads · headDim]` (no rows without sinks): a function of the weights alone, so
    /// it is computed when they change rather than on every call (decoding one token would
    /// otherwise re-read both projections once per sink).
    private(set) var projectedSinks = ProjectedKeyValues(rows: 0, width: 0)

    /// Recomputes ``projectedSinks`` from the current weights.
    mutating func refreshProjectedSinks() {
        let kvWidth = config.numKVHeads * config.headDim
        guard let sinkStates else {
            projectedSinks = ProjectedKeyValues(rows: 0, width: kvWidth)
            return
        }
        let s = config.numSinks
        var projected = Projections.apply(sinkStates.scalars, rows: s, weights: [kProj, vProj],
                                          workers: projectionWorkers)
        let values = projected.removeLast()
        var keys = projected.removeLast()
        if config.useRoPE {
            let heads = keys.mutablePointer
            withExtendedLifetime(keys) {
                RotaryEmbedding(config: config).apply(to: [(heads, config.numKVHeads)], batch: 1, seq: s,
                                                      firstPositions: [0], workers: projectionWorkers)
            }
        }
        projectedSinks = ProjectedKeyValues(keys: keys, values: values, width: kvWidth)
    }

    /// Forces the flash kernel's block sizes (tests use small blocks to span many of them).
    var flashBlockSizes: FlashBlockSizes?

    /// Creates a layer with freshly initialised weights.
    ///
    /// - Parameters:
    ///   - seed: the weights are a pure function of `seed`, `config` and `weightInitialization`,
    ///     identical on every run. Each parameter draws from its own stream.
    ///   - weightInitialization: PyTorch's defaults or orthogonal (LAPACKE QR). The random
    ///     draws are platform-identical; the orthogonal factor goes through the system LAPACK,
    ///     whose last bits may differ between LAPACK builds.
    public init(
        config: AttentionConfig, seed: UInt64 = 0,
        weightInitialization: WeightInitialization = .pytorchDefault
    ) throws {
        self.config = config
        let d = config.dModel, kv = config.numKVHeads * config.headDim
        func linear(_ parameter: AttentionParameter, rows: Int) throws -> Tensor {
            var generator = WeightInitializer.stream(seed: seed, parameter: parameter)
            return try WeightInitializer.linear(rows: rows, columns: d, method: weightInitialization,
                                                generator: &generator)
        }
        qProj = try linear(.qProj, rows: d)
        kProj = try linear(.kProj, rows: kv)
        vProj = try linear(.vProj, rows: kv)
        outProj = try linear(.outProj, rows: d)
        if config.useAttentionSinks {
            var generator = WeightInitializer.stream(seed: seed, parameter: .sinkStates)
            sinkStates = try WeightInitializer.normal(
                rows: config.numAttentionSinks, columns: d, standardDeviation: 0.02,
                generator: &generator)
        } else {
            sinkStates = nil
        }
        refreshProjectedSinks()
    }

    /// Attention over `x` in evaluation or training mode.
    ///
    /// - Parameters:
    ///   - x: `[batch, seq, dModel]`. `batch` or `seq` may be 0: the result is then an empty
    ///     `[batch, seq, dModel]` tensor.
    ///   - mask: optional additive mask, `[seq, seq]`, `[seq, S+seq]` or
    ///     `[batch or 1, 1 or nHeads, seq, seq or S+seq]`; added to the scaled scores on top of
    ///     the causal rule. Width `seq` leaves sinks unmasked; width `S+seq` covers them too.
    ///     NaN and `+∞` are rejected.
    ///   - training: apply dropout (`config.dropout`) to the attention weights. Each call draws
    ///     a fresh seed; use ``forward(_:mask:training:dropoutSeed:kernel:)`` to fix it.
    /// - Returns: `[batch, seq, dModel]`. A query that sees no key at all (every score hidden)
    ///   attends to nothing: its context is zeros, so its output row is zeros.
    /// - Throws: ``AttentionError`` for a wrong shape, a NaN or ±∞ in `x`, a bad mask value or
    ///   a size over ``AttentionLimits``; nothing is returned then.
    public func forward(_ x: Tensor, mask: Tensor? = nil, training: Bool = false) throws -> Tensor {
        try forward(x, mask: mask, training: training, dropoutSeed: nil, kernel: nil)
    }

    /// ``forward(_:mask:training:)`` with a fixed dropout seed and a kernel choice.
    ///
    /// - Parameters:
    ///   - dropoutSeed: with the same seed, inputs and weights, training-mode outputs are
    ///     bit-identical, whatever the kernel or thread count: whether weight `(b, h, i, j)`
    ///     survives depends only on `(seed, b, h, position(i), position(j))`. `nil` draws a
    ///     fresh seed from the system generator.
    ///   - kernel: overrides `config.useFlashAttention` for this call.
    public func forward(
        _ x: Tensor, mask: Tensor? = nil, training: Bool = false,
        dropoutSeed: UInt64?, kernel: AttentionKernel? = nil
    ) throws -> Tensor {
        let (batch, n) = try validateInput(x, extraKeys: 0)
        let validatedMask = try mask.map {
            ValidatedMask(tensor: $0, layout: try MaskLayout.validate(
                $0, batch: batch, heads: config.nHeads, queryCount: n, sinkCount: config.numSinks))
        }
        guard batch * n > 0 else { return Tensor(zeros: [batch, n, config.dModel]) }
        return try run(
            x, tokenOffsets: Array(repeating: 0, count: batch), tokenCounts: Array(repeating: n, count: batch),
            mask: validatedMask, cache: nil, training: training, dropoutSeed: dropoutSeed, kernel: kernel
        ).output
    }

    /// Checks `x` is `[batch, seq, dModel]` and that `seq` plus `extraKeys` cached keys fit the
    /// BLAS limits; returns `(batch, seq)`.
    func validateInput(_ x: Tensor, extraKeys: Int) throws -> (batch: Int, seq: Int) {
        let d = config.dModel
        guard x.rank == 3 else {
            throw AttentionError.invalidInput(
                "x shape \(x.shape) must be [batch, seq, dModel] (rank 3, got rank \(x.rank))")
        }
        guard x.shape[2] == d else {
            throw AttentionError.invalidInput(
                "x shape \(x.shape) must end in dModel (\(d)); got last dimension \(x.shape[2])")
        }
        let batch = x.shape[0], n = x.shape[1], s = config.numSinks
        // batch · seq fits Int: x.count does and dModel >= 1.
        let keyParts = extraKeys == 0 ? [("sinks", s), ("seq", n)] : [("sinks", s), ("cached", extraKeys), ("seq", n)]
        let keys = AttentionProblem.limitedSum(keyParts.map(\.1))
        try AttentionProblem.checkSizes(
            [("batch · seq", "\(batch) · \(n)", batch * n),
             (keyParts.map(\.0).joined(separator: " + "), keyParts.map { String($0.1) }.joined(separator: " + "), keys)],
            scoreMatrix: "score matrix [seq, keys]", queries: n, keys: keys)
        try Self.requireFinite(x, name: "x")
        return (batch, n)
    }

    /// Projections → RoPE → attention kernel → output projection.
    ///
    /// Token `t` of batch row `b` sits at position `S + tokenOffsets[b] + t`; rows
    /// `t >= tokenCounts[b]` are padding (never visible, zero output). Keys are the sinks, then
    /// the `cache`'s tokens, then this chunk's real tokens, each handing the kernel its own
    /// segments; the cache's window, if any, applies. Returns the output and this chunk's
    /// post-RoPE keys and values (`[batch · seq, numKVHeads · headDim]`) for a cache to keep.
    func run(
        _ x: Tensor, tokenOffsets: [Int], tokenCounts: [Int], mask: ValidatedMask?, cache: KVCache?,
        training: Bool, dropoutSeed: UInt64?, kernel: AttentionKernel?
    ) throws -> (output: Tensor, tokens: ProjectedKeyValues) {
        let d = config.dModel, batch = x.shape[0], n = x.shape[1], rows = batch * n
        let s = config.numSinks, h = config.nHeads, hkv = config.numKVHeads, hd = config.headDim
        let dropout: DropoutMask? = training && config.dropout > 0
            ? DropoutMask(probability: config.dropout,
                          seed: dropoutSeed ?? UInt64.random(in: .min ... .max))
            : nil
        let positions = tokenOffsets.map { s + $0 }
        guard rows > 0 else {
            return (Tensor(zeros: [batch, n, d]), ProjectedKeyValues(rows: 0, width: hkv * hd))
        }
        let (queries, tokens) = projectTokens(x, batch: batch, seq: n, positions: positions)
        let segments = keySegments(tokens: tokens, seq: n, tokenCounts: tokenCounts, positions: positions,
                                   cache: cache, coversSinks: mask?.layout.coversSinks == true)
        var context = AlignedBuffer(zeros: rows * d)
        let problem = AttentionProblem(
            batch: batch, queryCount: n, nHeads: h, numKVHeads: hkv, headDim: hd, queries: queries.pointer,
            queryFirstPositions: positions, queryCounts: tokenCounts, segments: segments, mask: nil,
            isCausal: config.isCausal, window: cache?.window, scale: scale, dropout: dropout,
            context: context.mutablePointer)
        withExtendedLifetime((queries, tokens, projectedSinks, cache, context)) {
            mask.withAdditiveMask { additiveMask in
                var problem = problem
                problem.mask = additiveMask
                problem.run(kernelOptions(kernel))
            }
        }

        // Every element is written by the projection (rows > 0).
        let output = [Float](unsafeUninitializedCapacity: rows * d) { output, initialized in
            withExtendedLifetime(context) {
                Projections.apply(context.pointer, rows: rows, weights: [outProj], into: [output.baseAddress!],
                                  workers: projectionWorkers)
            }
            initialized = rows * d
        }
        return (try Tensor(shape: [batch, n, d], scalars: output), tokens)
    }

    /// The queries `[batch · seq, nHeads · headDim]` and this chunk's keys and values
    /// `[batch · seq, numKVHeads · headDim]` of `x`, queries and keys rotated by RoPE: batch row
    /// `b`'s token `t` at position `positions[b] + t`.
    func projectTokens(
        _ x: Tensor, batch: Int, seq: Int, positions: [Int]
    ) -> (queries: AlignedBuffer, tokens: ProjectedKeyValues) {
        let h = config.nHeads, hkv = config.numKVHeads, hd = config.headDim
        // Moved out of the array, so that RoPE rotates the only reference in place (no copy).
        var projected = Projections.apply(x.scalars, rows: batch * seq, weights: [qProj, kProj, vProj],
                                          workers: projectionWorkers)
        let values = projected.removeLast(), keys = projected.removeLast()
        var queries = projected.removeLast()
        var tokens = ProjectedKeyValues(keys: keys, values: values, width: hkv * hd)
        if config.useRoPE {
            let targets = [(queries.mutablePointer, h), (tokens.keys.mutablePointer, hkv)]
            withExtendedLifetime((queries, tokens)) {
                RotaryEmbedding(config: config).apply(to: targets, batch: batch, seq: seq, firstPositions: positions,
                                                      workers: projectionWorkers)
            }
        }
        return (queries, tokens)
    }

    /// Each batch row's keys as the kernel reads them: the sinks, then the `cache`'s tokens, then
    /// this chunk's real tokens (`tokenCounts[b]` of `seq`). Valid while `tokens`, the layer and
    /// the cache are alive.
    func keySegments(
        tokens: ProjectedKeyValues, seq: Int, tokenCounts: [Int], positions: [Int], cache: KVCache?,
        coversSinks: Bool
    ) -> [[KeyValueSegment]] {
        let s = config.numSinks
        let sinks = s == 0 ? [] : [projectedSinks.segment(rows: 0, count: s, firstPosition: 0, isSink: true,
                                                          firstMaskColumn: coversSinks ? 0 : nil)]
        return tokenCounts.indices.map { b in
            sinks + (cache?.segments(row: b) ?? [])
                + [tokens.segment(rows: b * seq, count: tokenCounts[b], firstPosition: positions[b], isSink: false,
                                  firstMaskColumn: coversSinks ? s : 0)]
        }
    }

    /// The kernel, workers, key split and blocks this layer's settings give a call.
    func kernelOptions(_ kernel: AttentionKernel?) -> KernelOptions {
        KernelOptions(kernel: kernel ?? (config.useFlashAttention ? .flash : .reference),
                      workers: kernelWorkerCount, keySplit: keySplit, blockSizes: flashBlockSizes)
    }

    /// Workers of the projections: the kernel's.
    var projectionWorkers: Int { kernelWorkerCount ?? FlashAttention.defaultWorkerCount }
}
