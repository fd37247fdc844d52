/// The gradients of a loss with respect to the layer's input and parameters, for one `dy`
/// (from the pullback of ``MultiHeadAttention/forwardWithPullback(_:mask:training:dropoutSeed:kernel:)``).
public struct AttentionGradients: Sendable {
    /// dL/dx, `[batch, seq, dModel]`.
    public let input: Tensor
    private let gradientsByParameter: [AttentionParameter: Tensor]

    /// `parameters` already checked to be finite.
    init(input: Tensor, checkedParameters parameters: [AttentionParameter: Tensor]) {
        self.input = input
        gradientsByParameter = parameters
    }

    init(_ gradients: LayerGradients, layer: MultiHeadAttention, inputShape: [Int]) throws {
        input = try Tensor(shape: inputShape, scalars: gradients.input)
        var parameters: [AttentionParameter: Tensor] = [:]
        for parameter in AttentionParameter.allCases {
            if let scalars = gradients[parameter], let shape = layer.expectedShape(of: parameter) {
                parameters[parameter] = try Tensor(shape: shape, scalars: scalars)
            }
        }
        gradientsByParameter = parameters
    }

    /// dL/d`parameter`, shaped like the parameter (`[dModel, dModel]` for ``AttentionParameter/qProj``,
    /// `[S, dModel]` for ``AttentionParameter/sinkStates``, …); `nil` for the sink states of a
    /// layer without sinks.
    public subscript(_ parameter: AttentionParameter) -> Tensor? { gradientsByParameter[parameter] }
}

/// The layer's gradients for one `dy`, each shaped like what it differentiates, as flat arrays.
struct LayerGradients: Sendable {
    /// dL/dx, `[batch, seq, dModel]`.
    var input: [Float]
    var qProj: [Float], kProj: [Float], vProj: [Float], outProj: [Float]
    /// `[S, dModel]`; `nil` without sinks.
    var sinkStates: [Float]?

    subscript(parameter: AttentionParameter) -> [Float]? {
        switch parameter {
        case .qProj: qProj
        case .kProj: kProj
        case .vProj: vProj
        case .outProj: outProj
        case .sinkStates: sinkStates
        }
    }
}

extension MultiHeadAttention {
    /// ``forward(_:mask:training:dropoutSeed:kernel:)``, and a pullback that turns `dy = dL/dy`
    /// into the gradients of the input and of every parameter (DESIGN.md §3b).
    ///
    ///     let (y, pullback) = try layer.forwardWithPullback(x, training: true, dropoutSeed: 7)
    ///     let grads = try pullback(dy)          // dy: [batch, seq, dModel]
    ///     grads.input                           // dL/dx, [batch, seq, dModel]
    ///     grads[.qProj], grads[.sinkStates]     // shaped like the parameters
    ///
    /// - Parameters: as ``forward(_:mask:training:dropoutSeed:kernel:)``, whose output `y` is
    ///   bit for bit. With `training` and no `dropoutSeed`, a seed is drawn once and the
    ///   pullback reuses it, so the gradients belong to the `y` returned.
    /// - Returns: `y` `[batch, seq, dModel]` and the pullback: `@Sendable`, callable more than
    ///   once (the same `dy` gives the same gradients, bit for bit, for every worker count) and
    ///   from any thread. Each call runs the chosen kernel's backward: ``AttentionKernel/flash``
    ///   never stores an `N × N` matrix, ``AttentionKernel/reference`` materialises the scores.
    ///   The forward's post-RoPE queries, keys and values, its context and (flash) each row's
    ///   log-sum-exp are kept for the pullback: `O(N)` memory, nothing `N × N`.
    /// - Throws: what `forward` throws; the pullback throws ``AttentionError/invalidInput(_:)``
    ///   for a `dy` whose shape is not `x`'s or that holds NaN or ±∞.
    public func forwardWithPullback(
        _ x: Tensor, mask: Tensor? = nil, training: Bool = false, dropoutSeed: UInt64? = nil,
        kernel: AttentionKernel? = nil
    ) throws -> (output: Tensor, pullback: @Sendable (Tensor) throws -> AttentionGradients) {
        let saved = try savedForward(x, mask: mask, training: training,
                                     dropoutSeed: dropoutSeed ?? UInt64.random(in: .min ... .max),
                                     kernel: kernel ?? (config.useFlashAttention ? .flash : .reference))
        let layer = self
        return (saved.output, { dy in
            try AttentionGradients(try layer.gradients(of: saved, dy: dy), layer: layer, inputShape: x.shape)
        })
    }

    /// ``savedForward(_:mask:training:dropoutSeed:kernel:)`` then ``gradients(of:dy:)``.
    func layerGradients(
        _ x: Tensor, mask: Tensor?, training: Bool, dropoutSeed: UInt64, dy: Tensor, kernel: AttentionKernel
    ) throws -> (output: Tensor, gradients: LayerGradients) {
        let saved = try savedForward(x, mask: mask, training: training, dropoutSeed: dropoutSeed, kernel: kernel)
        return (saved.output, try gradients(of: saved, dy: dy))
    }

    /// What a forward keeps for its pullback.
    struct SavedForward: Sendable {
        let x: Tensor
        let mask: ValidatedMask?
        let dropout: DropoutMask?
        let kernel: AttentionKernel
        let batch: Int, seq: Int
        /// Post-RoPE queries `[batch · seq, nHeads · headDim]`; keys (post-RoPE) and values.
        let queries: AlignedBuffer
        let tokens: ProjectedKeyValues
        /// The kernel's output `[batch · seq, nHeads · headDim]`.
        let context: AlignedBuffer
        /// The flash kernel's row log-sum-exp, `[batch, nHeads, seq]`; `nil` for the reference kernel.
        let logSumExp: AlignedBuffer?
        let output: Tensor
    }

    /// The forward pass with `kernel`, keeping what ``gradients(of:dy:)`` needs; its output is
    /// ``forward(_:mask:training:dropoutSeed:kernel:)``'s, bit for bit.
    func savedForward(
        _ x: Tensor, mask: Tensor?, training: Bool, dropoutSeed: UInt64, kernel: AttentionKernel
    ) throws -> SavedForward {
        let (batch, n) = try validateInput(x, extraKeys: 0)
        let validatedMask = try mask.map {
            ValidatedMask(tensor: $0, layout: try MaskLayout.validate(
                $0, batch: batch, heads: config.nHeads, queryCount: n, sinkCount: config.numSinks))
        }
        let dm = config.dModel, rows = batch * n, s = config.numSinks
        let h = config.nHeads, hkv = config.numKVHeads, hd = config.headDim
        let dropout = training && config.dropout > 0
            ? DropoutMask(probability: config.dropout, seed: dropoutSeed) : nil
        let positions = Array(repeating: s, count: batch), tokenCounts = Array(repeating: n, count: batch)
        guard rows > 0 else {
            return SavedForward(x: x, mask: validatedMask, dropout: dropout, kernel: kernel, batch: batch, seq: n,
                                queries: AlignedBuffer(zeros: 0), tokens: ProjectedKeyValues(rows: 0, width: hkv * hd),
                                context: AlignedBuffer(zeros: 0), logSumExp: nil, output: Tensor(zeros: x.shape))
        }
        let (queries, tokens) = projectTokens(x, batch: batch, seq: n, positions: positions)
        let segments = keySegments(tokens: tokens, seq: n, tokenCounts: tokenCounts, positions: positions,
                                   cache: nil, coversSinks: validatedMask?.layout.coversSinks == true)
        var context = AlignedBuffer(overwrittenCount: rows * dm)  // the kernel writes every row
        var logSumExp = kernel == .flash ? AlignedBuffer(zeros: batch * h * n) : nil
        var problem = AttentionProblem(
            batch: batch, queryCount: n, nHeads: h, numKVHeads: hkv, headDim: hd, queries: queries.pointer,
            queryFirstPositions: positions, queryCounts: tokenCounts, segments: segments, mask: nil,
            isCausal: config.isCausal, window: nil, scale: scale, dropout: dropout, context: context.mutablePointer)
        problem.logSumExp = logSumExp?.mutablePointer
        var output = [Float](repeating: 0, count: rows * dm)
        withExtendedLifetime((queries, tokens, projectedSinks, context, logSumExp)) {
            validatedMask.withAdditiveMask { additiveMask in
                problem.mask = additiveMask
                problem.run(kernelOptions(kernel))
            }
            // As `forward` computes it, so that the outputs are bit-identical.
            output.withUnsafeMutableBufferPointer { output in
                Projections.apply(context.pointer, rows: rows, weights: [outProj], into: [output.baseAddress!],
                                  workers: projectionWorkers)
            }
        }
        return SavedForward(x: x, mask: validatedMask, dropout: dropout, kernel: kernel, batch: batch, seq: n,
                            queries: queries, tokens: tokens, context: context, logSumExp: logSumExp,
                            output: try Tensor(shape: x.shape, scalars: output))
    }

    /// The backward of a ``SavedForward`` (DESIGN.md §3b), in the reverse order of the stages:
    ///
    ///     dWo = dyᵀ · context;   dcontext = dy · Wo
    ///     dQ, dK, dV (post-RoPE) from the kernel's backward (``ReferenceBackward``,
    ///     ``FlashBackward``); the sinks' dK, dV summed over batch rows
    ///     dQ, dK ← inverse RoPE at the same positions (sinks at 0..<S)
    ///     dWq = dQᵀ·x;  dWk = dKᵀ·x + dK_sinkᵀ·sinks;  dWv likewise
    ///     dx = dQ·Wq + dK·Wk + dV·Wv;  dsinks = dK_sink·Wk + dV_sink·Wv
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` when `dy` is not shaped like `x` or holds
    ///   NaN or ±∞.
    func gradients(of saved: SavedForward, dy: Tensor) throws -> LayerGradients {
        let x = saved.x
        guard dy.shape == x.shape else {
            throw AttentionError.invalidInput("dy shape \(dy.shape) must equal the shape of x, \(x.shape)")
        }
        try Self.requireFinite(dy, name: "dy")
        let batch = saved.batch, n = saved.seq
        let dm = config.dModel, rows = batch * n, s = config.numSinks
        let h = config.nHeads, hkv = config.numKVHeads, hd = config.headDim, kvWidth = hkv * hd
        guard rows > 0 else {
            return LayerGradients(
                input: [Float](repeating: 0, count: rows * dm), qProj: [Float](repeating: 0, count: qProj.count),
                kProj: [Float](repeating: 0, count: kProj.count), vProj: [Float](repeating: 0, count: vProj.count),
                outProj: [Float](repeating: 0, count: outProj.count),
                sinkStates: sinkStates.map { [Float](repeating: 0, count: $0.count) })
        }

        let positions = Array(repeating: s, count: batch), tokenCounts = Array(repeating: n, count: batch)
        let segments = keySegments(tokens: saved.tokens, seq: n, tokenCounts: tokenCounts, positions: positions,
                                   cache: nil, coversSinks: saved.mask?.layout.coversSinks == true)
        var problem = AttentionProblem(
            batch: batch, queryCount: n, nHeads: h, numKVHeads: hkv, headDim: hd, queries: saved.queries.pointer,
            queryFirstPositions: positions, queryCounts: tokenCounts, segments: segments, mask: nil,
            isCausal: config.isCausal, window: nil, scale: scale, dropout: saved.dropout,
            context: UnsafeMutablePointer(mutating: saved.context.pointer))
        let workers = kernelWorkerCount ?? FlashAttention.defaultWorkerCount
        // Post-RoPE dQ, and the tokens' dK, dV as `[batch · seq, kvWidth]`; the sinks' dK, dV
        // one buffer per batch row (the rows share the sinks), summed below.
        // Both kernels' backward passes zero what they write before adding into it.
        var dQueries = AlignedBuffer(overwrittenCount: rows * dm)
        var tokenKeys = AlignedBuffer(overwrittenCount: rows * kvWidth)
        var tokenValues = AlignedBuffer(overwrittenCount: rows * kvWidth)
        var sinkKeyRows = (0..<(s > 0 ? batch : 0)).map { _ in AlignedBuffer(overwrittenCount: s * kvWidth) }
        var sinkValueRows = sinkKeyRows.map { AlignedBuffer(overwrittenCount: $0.count) }
        let dQ = dQueries.mutablePointer, dK = tokenKeys.mutablePointer, dV = tokenValues.mutablePointer
        let sinkKeyPointers = sinkKeyRows.indices.map { sinkKeyRows[$0].mutablePointer }
        let sinkValuePointers = sinkValueRows.indices.map { sinkValueRows[$0].mutablePointer }
        var dOutProj = AlignedBuffer(overwrittenCount: outProj.count)
        let dOutProjPointer = dOutProj.mutablePointer
        do {
            // dWo = dyᵀ · context;  dcontext = dy · Wo (freed once the kernel's backward is done)
            var dContext = AlignedBuffer(overwrittenCount: rows * dm)
            let dContextPointer = dContext.mutablePointer
            withUnsafePointers(to: [dy.scalars, outProj.scalars]) { operands in
                let (dy, wo) = (operands[0], operands[1])
                Projections.multiply([
                    ProductChain(terms: [.init(a: dy, lda: dm, transposeA: true, b: saved.context.pointer, ldb: dm, k: rows)],
                                 m: dm, n: dm, c: dOutProjPointer, ldc: dm, accumulates: false),
                    ProductChain(terms: [.init(a: dy, lda: dm, transposeA: false, b: wo, ldb: dm, k: dm)],
                                 m: rows, n: dm, c: dContextPointer, ldc: dm, accumulates: false),
                ], workers: workers)
            }
            // Segments as `keySegments` orders them: [sinks, tokens].
            let perRow = n * kvWidth
            let kernelBuffers = AttentionBackwardBuffers(
                contextGradient: dContext.pointer, context: saved.context.pointer, queries: dQ,
                keys: (0..<batch).map { b in (s > 0 ? [sinkKeyPointers[b]] : []) + [dK + b * perRow] },
                values: (0..<batch).map { b in (s > 0 ? [sinkValuePointers[b]] : []) + [dV + b * perRow] })
            withExtendedLifetime((saved, projectedSinks, dContext, dQueries, tokenKeys, tokenValues, sinkKeyRows,
                                  sinkValueRows)) {
                saved.mask.withAdditiveMask { additiveMask in
                    problem.mask = additiveMask
                    switch (saved.kernel, saved.logSumExp) {
                    case (.flash, let logSumExp?):
                        FlashBackward.run(problem, buffers: kernelBuffers, logSumExp: logSumExp.pointer,
                                          blocks: flashBlockSizes ?? FlashBackward.defaultBlocks, keySplit: keySplit,
                                          workers: workers)
                    default:
                        ReferenceBackward.run(problem, buffers: kernelBuffers, workers: workers)
                    }
                }
            }
        }

        // The sinks' dK, dV summed over batch rows in row order.
        var sinkKeys = AlignedBuffer(zeros: s * kvWidth), sinkValues = AlignedBuffer(zeros: s * kvWidth)
        let sinkK = sinkKeys.mutablePointer, sinkV = sinkValues.mutablePointer
        for b in sinkKeyRows.indices {
            for i in 0..<(s * kvWidth) {
                sinkK[i] += sinkKeyRows[b].pointer[i]
                sinkV[i] += sinkValueRows[b].pointer[i]
            }
        }
        if config.useRoPE {
            let rope = RotaryEmbedding(config: config)
            rope.apply(to: [(dQ, h), (dK, hkv)], batch: batch, seq: n, firstPositions: positions,
                       workers: projectionWorkers, inverse: true)
            if s > 0 {
                rope.apply(to: [(sinkK, hkv)], batch: 1, seq: s, firstPositions: [0], workers: projectionWorkers,
                           inverse: true)
            }
        }

        // dWq = dQᵀ·x;  dWk = dKᵀ·x + dK_sinkᵀ·sinks;  dWv likewise;
        // dx = dQ·Wq + dK·Wk + dV·Wv;  dsinks = dK_sink·Wk + dV_sink·Wv
        var dQProj = AlignedBuffer(overwrittenCount: dm * dm), dKProj = AlignedBuffer(overwrittenCount: kvWidth * dm)
        var dVProj = AlignedBuffer(overwrittenCount: kvWidth * dm), dSinks = AlignedBuffer(overwrittenCount: s * dm)
        let weightOutputs = (dQProj.mutablePointer, dKProj.mutablePointer, dVProj.mutablePointer, dSinks.mutablePointer)
        // Every element is written: each row block's first product overwrites it.
        var input = [Float](unsafeUninitializedCapacity: rows * dm) { $1 = rows * dm }
        withExtendedLifetime((dQueries, tokenKeys, tokenValues, sinkKeys, sinkValues)) {
        input.withUnsafeMutableBufferPointer { dInput in
        withUnsafePointers(to: [x.scalars, sinkStates?.scalars ?? [], qProj.scalars, kProj.scalars, vProj.scalars]) {
            let (x, sinks, wq, wk, wv) = ($0[0], $0[1], $0[2], $0[3], $0[4])
            typealias Term = ProductChain.Term
            func weightGradient(_ terms: [Term], outputs: Int, into dW: UnsafeMutablePointer<Float>) -> ProductChain {
                ProductChain(terms: terms, m: outputs, n: dm, c: dW, ldc: dm, accumulates: false)
            }
            let sinkTerms = { (dY: UnsafePointer<Float>) in
                s > 0 ? [Term(a: dY, lda: kvWidth, transposeA: true, b: sinks, ldb: dm, k: s)] : []
            }
            Projections.multiply([
                weightGradient([Term(a: dQ, lda: dm, transposeA: true, b: x, ldb: dm, k: rows)],
                               outputs: dm, into: weightOutputs.0),
                weightGradient([Term(a: dK, lda: kvWidth, transposeA: true, b: x, ldb: dm, k: rows)] + sinkTerms(sinkK),
                               outputs: kvWidth, into: weightOutputs.1),
                weightGradient([Term(a: dV, lda: kvWidth, transposeA: true, b: x, ldb: dm, k: rows)] + sinkTerms(sinkV),
                               outputs: kvWidth, into: weightOutputs.2),
                ProductChain(terms: [Term(a: dQ, lda: dm, transposeA: false, b: wq, ldb: dm, k: dm),
                                     Term(a: dK, lda: kvWidth, transposeA: false, b: wk, ldb: dm, k: kvWidth),
                                     Term(a: dV, lda: kvWidth, transposeA: false, b: wv, ldb: dm, k: kvWidth)],
                             m: rows, n: dm, c: dInput.baseAddress!, ldc: dm, accumulates: false),
                ProductChain(terms: [Term(a: sinkK, lda: kvWidth, transposeA: false, b: wk, ldb: dm, k: kvWidth),
                                     Term(a: sinkV, lda: kvWidth, transposeA: false, b: wv, ldb: dm, k: kvWidth)],
                             m: s, n: dm, c: weightOutputs.3, ldc: dm, accumulates: false),
            ], workers: workers)
        }
        }
        }
        return LayerGradients(input: input, qProj: dQProj.array, kProj: dKProj.array, vProj: dVProj.array,
                              outProj: dOutProj.array, sinkStates: sinkStates == nil ? nil : dSinks.array)
    }
}

