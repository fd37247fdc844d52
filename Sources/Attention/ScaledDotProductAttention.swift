/// The attention kernel alone, without projections, RoPE or sinks:
///
///     out[b, i, h] = Σ_j softmax_j(scale · q[b, i, h] · k[b, j, kv]ᵀ + mask[b, h, i, j]) · v[b, j, kv]
///
/// with `kv = h / (nHeads / numKVHeads)`: keys and values are not pre-tiled for grouped-query
/// attention.
///
/// Each of `queries` and the key/value pair comes in either of two layouts, told apart by rank:
/// token-major (rank 3, heads as column slices of a row, as a projection writes them) or
/// head-major (rank 4, PyTorch's `scaled_dot_product_attention` layout and the layout of a
/// PyTorch KV cache). Head-major keys and values are read in place, each head's rows contiguous.
///
/// - Parameters:
///   - queries: `[batch, queryLength, nHeads · headDim]`, or `[batch, nHeads, queryLength, headDim]`.
///   - keys, values: `[batch, keyLength, numKVHeads · headDim]`, or
///     `[batch, numKVHeads, keyLength, headDim]` (both in the same layout); `keyLength` may
///     differ from `queryLength` (decoding against cached keys).
///   - nHeads: query heads; `numKVHeads` must divide it. With head-major tensors they must
///     equal the tensors' head dimensions.
///   - scale: defaults to `1/√headDim`.
///   - isCausal: bottom-right aligned, as in decoding: query `i` sees keys
///     `j <= i + keyLength − queryLength`. (PyTorch's `is_causal` aligns top-left when the
///     lengths differ; they agree when they are equal.)
///   - mask: additive, `[queryLength, keyLength]` or
///     `[batch or 1, 1 or nHeads, queryLength, keyLength]`; NaN and `+∞` are rejected.
///   - kernel: `.flash` (default) or `.reference`.
///   - workers: the kernel's workers (either kernel), `nil` for one per active processor; every
///     BLAS product inside runs on one OpenBLAS thread, whatever ``BLAS/threadCount`` is.
///   - keySplit: how the flash kernel splits keys across workers for few queries.
/// - Returns: the outputs in the layout of `queries`: `[batch, queryLength, nHeads · headDim]`
///   or `[batch, nHeads, queryLength, headDim]`; a query that sees no key gets zeros.
/// - Note: unlike ``MultiHeadAttention``, this function does not scan `queries`, `keys` and
///   `values` for NaN or ±∞: against a long key cache the scan would cost as much as the
///   attention. A non-finite input makes the outputs it reaches NaN (through `0 · NaN`, possibly
///   rows that do not see it), never a finite wrong number.
public func scaledDotProductAttention(
    queries: Tensor, keys: Tensor, values: Tensor, nHeads: Int, numKVHeads: Int,
    scale: Float? = nil, isCausal: Bool = false, mask: Tensor? = nil,
    kernel: AttentionKernel = .flash, workers: Int? = nil, keySplit: KeySplit = .automatic
) throws -> Tensor {
    let call = try AttentionCall(queries: queries, keys: keys, values: values, nHeads: nHeads,
                                 numKVHeads: numKVHeads, scale: scale, isCausal: isCausal, mask: mask)
    var context = [Float](repeating: 0, count: queries.count)
    // No key at all: every query sees nothing, so the result is zeros.
    guard call.batch * call.queryCount > 0, call.keyCount > 0 else {
        return try Tensor(shape: queries.shape, scalars: context)
    }
    let options = KernelOptions(kernel: kernel, workers: workers, keySplit: keySplit)
    context.withUnsafeMutableBufferPointer { context in
        call.withProblem(context: context.baseAddress!) { $0.run(options) }
    }
    return try Tensor(shape: queries.shape, scalars: call.inQueryLayout(context))
}

/// One validated call of ``scaledDotProductAttention(queries:keys:values:nHeads:numKVHeads:scale:isCausal:mask:kernel:workers:keySplit:)``
/// (or of its pullback): the shapes, the layouts and the kernels' problem.
struct AttentionCall: Sendable {
    let batch: Int, queryCount: Int, keyCount: Int, headDim: Int
    let nHeads: Int, numKVHeads: Int
    let headMajorQueries: Bool, headMajorKeys: Bool
    let scale: Float, isCausal: Bool
    let mask: ValidatedMask?
    /// Queries as the kernels take them, token-major `[batch, queryCount, nHeads · headDim]`.
    let tokenMajorQueries: [Float]
    let keys: [Float], values: [Float]
    let queryShape: [Int], keyShape: [Int]

    var kvWidth: Int { numKVHeads * headDim }

    /// Validates the arguments as the public function documents them.
    init(queries: Tensor, keys: Tensor, values: Tensor, nHeads: Int, numKVHeads: Int, scale: Float?,
         isCausal: Bool, mask: Tensor?) throws {
        func fail(_ message: String) -> AttentionError { .invalidInput(message) }
        guard nHeads > 0 else { throw fail("nHeads (\(nHeads)) must be > 0") }
        guard numKVHeads > 0, nHeads % numKVHeads == 0 else {
            throw fail("numKVHeads (\(numKVHeads)) must be > 0 and divide nHeads (\(nHeads))")
        }
        let headMajorQueries = queries.rank == 4
        let batch: Int, n: Int, headDim: Int
        if headMajorQueries {
            guard queries.shape[1] == nHeads, queries.shape[3] > 0 else {
                throw fail("queries shape \(queries.shape) must be [batch, nHeads, seq, headDim] with nHeads \(nHeads)")
            }
            (batch, n, headDim) = (queries.shape[0], queries.shape[2], queries.shape[3])
        } else {
            guard queries.rank == 3, queries.shape[2] % nHeads == 0, queries.shape[2] > 0 else {
                throw fail("queries shape \(queries.shape) must be [batch, seq, nHeads · headDim] "
                           + "or [batch, nHeads, seq, headDim] with nHeads \(nHeads)")
            }
            (batch, n, headDim) = (queries.shape[0], queries.shape[1], queries.shape[2] / nHeads)
        }
        let headMajorKeys = keys.rank == 4
        let keyCount: Int
        if headMajorKeys {
            guard keys.shape[0] == batch, keys.shape[1] == numKVHeads, keys.shape[3] == headDim else {
                throw fail("keys shape \(keys.shape) must be [\(batch), \(numKVHeads), keyLength, \(headDim)]")
            }
            keyCount = keys.shape[2]
        } else {
            guard keys.rank == 3, keys.shape[0] == batch, keys.shape[2] == numKVHeads * headDim else {
                throw fail("keys shape \(keys.shape) must be [\(batch), keyLength, \(numKVHeads * headDim)] "
                           + "or [\(batch), \(numKVHeads), keyLength, \(headDim)]")
            }
            keyCount = keys.shape[1]
        }
        guard values.shape == keys.shape else {
            throw fail("values shape \(values.shape) must equal keys shape \(keys.shape)")
        }
        if let scale, !scale.isFinite {
            throw fail("scale (\(scale)) must be finite")
        }
        // Each product fits Int: the queries and keys tensors hold at least that many elements.
        try AttentionProblem.checkSizes(
            [("batch · queryLength", "\(batch * n)", batch * n),
             ("batch · keyLength", "\(batch * keyCount)", batch * keyCount)],
            scoreMatrix: "score matrix [queryLength, keyLength]", queries: n, keys: keyCount)
        self.mask = try mask.map {
            ValidatedMask(tensor: $0, layout: try MaskLayout.validate(
                $0, batch: batch, heads: nHeads, queryCount: n, widths: [keyCount],
                context: "for batch \(batch), nHeads \(nHeads), queryLength \(n), keyLength \(keyCount)"))
        }
        (self.batch, self.queryCount, self.keyCount, self.headDim) = (batch, n, keyCount, headDim)
        (self.nHeads, self.numKVHeads) = (nHeads, numKVHeads)
        (self.headMajorQueries, self.headMajorKeys) = (headMajorQueries, headMajorKeys)
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
        self.isCausal = isCausal
        // The kernels take token-major queries and write token-major outputs; one query row is
        // the same memory in both layouts.
        tokenMajorQueries = headMajorQueries && n > 1
            ? swapAxes1And2(queries.scalars, batch: batch, outer: nHeads, inner: n, width: headDim)
            : queries.scalars
        self.keys = keys.scalars
        self.values = values.scalars
        queryShape = queries.shape
        keyShape = keys.shape
    }

    /// A token-major `[batch, queryCount, nHeads · headDim]` result in the layout of the queries.
    func inQueryLayout(_ tokenMajor: [Float]) -> [Float] {
        headMajorQueries && queryCount > 1
            ? swapAxes1And2(tokenMajor, batch: batch, outer: queryCount, inner: nHeads, width: headDim)
            : tokenMajor
    }

    /// Queries-shaped `scalars` (a gradient of the output) token-major, as the kernels take them.
    func tokenMajor(_ scalars: [Float]) -> [Float] {
        headMajorQueries && queryCount > 1
            ? swapAxes1And2(scalars, batch: batch, outer: nHeads, inner: queryCount, width: headDim)
            : scalars
    }

    /// Runs `body` with the kernels' problem over this call's queries, keys and values, writing
    /// `context` (`[batch, queryCount, nHeads · headDim]`); everything is valid for the call.
    func withProblem<Result>(context: UnsafeMutablePointer<Float>, _ body: (AttentionProblem) -> Result) -> Result {
        withUnsafePointers(to: [tokenMajorQueries, keys, values]) { inputs in
            let (q, k, v) = (inputs[0], inputs[1], inputs[2])
            let kvWidth = kvWidth, keyCount = keyCount, headDim = headDim, headMajorKeys = headMajorKeys
            return mask.withAdditiveMask { mask in
                body(AttentionProblem(
                    batch: batch, queryCount: queryCount, nHeads: nHeads, numKVHeads: numKVHeads, headDim: headDim,
                    queries: q, queryFirstPosition: keyCount - queryCount,
                    segments: (0..<batch).map { b in
                        [KeyValueSegment(keys: k + b * keyCount * kvWidth, values: v + b * keyCount * kvWidth,
                                         rowStride: headMajorKeys ? headDim : kvWidth,
                                         headStride: headMajorKeys ? keyCount * headDim : nil,
                                         rowCount: keyCount, firstPosition: 0, isSink: false, firstMaskColumn: 0)]
                    },
                    mask: mask, isCausal: isCausal, scale: scale, dropout: nil, context: context))
            }
        }
    }
}

/// `[batch, outer, inner, width]` → `[batch, inner, outer, width]`.
func swapAxes1And2(_ scalars: [Float], batch: Int, outer: Int, inner: Int, width: Int) -> [Float] {
    [Float](unsafeUninitializedCapacity: scalars.count) { out, initialized in
        scalars.withUnsafeBufferPointer { source in
            for b in 0..<batch {
                for o in 0..<outer {
                    for i in 0..<inner {
                        let from = ((b * outer + o) * inner + i) * width
                        let to = ((b * inner + i) * outer + o) * width
                        (out.baseAddress! + to).initialize(from: source.baseAddress! + from, count: width)
                    }
                }
            }
        }
        initialized = scalars.count
    }
}
