/// The attention kernel alone, without projections, RoPE or sinks:
///
///     out[b, i, h] = Σ_j softmax_j(scale · q[b, i, h] · k[b, j, kv]ᵀ + mask[b, h, i, j]) · v[b, j, kv]
///
/// with `kv = h / (nHeads / numKVHeads)`: keys and values are not pre-tiled for grouped-query
/// attention.
///
/// - Parameters:
///   - queries: `[batch, queryLength, nHeads · headDim]` (heads are column slices, as a
///     projection writes them).
///   - keys, values: `[batch, keyLength, numKVHeads · headDim]`; `keyLength` may differ from
///     `queryLength` (decoding against cached keys).
///   - nHeads: query heads; `numKVHeads` must divide it.
///   - scale: defaults to `1/√headDim`.
///   - isCausal: bottom-right aligned, as in decoding: query `i` sees keys
///     `j <= i + keyLength − queryLength`. (PyTorch's `is_causal` aligns top-left when the
///     lengths differ; they agree when they are equal.)
///   - mask: additive, `[queryLength, keyLength]` or
///     `[batch or 1, 1 or nHeads, queryLength, keyLength]`; NaN and `+∞` are rejected.
/// - Note: unlike ``MultiHeadAttention``, this function does not scan `queries`, `keys` and
///   `values` for NaN or ±∞: against a long key cache the scan would cost as much as the
///   attention. A non-finite input makes the outputs it reaches NaN (through `0 · NaN`, possibly
///   rows that do not see it), never a finite wrong number.
///   - kernel: `.flash` (default) or `.reference`.
///   - workers: flash-kernel workers, `nil` for one per active processor.
///   - keySplit: how the flash kernel splits keys across workers for few queries.
/// - Returns: `[batch, queryLength, nHeads · headDim]`; a query that sees no key gets zeros.
public func scaledDotProductAttention(
    queries: Tensor, keys: Tensor, values: Tensor, nHeads: Int, numKVHeads: Int,
    scale: Float? = nil, isCausal: Bool = false, mask: Tensor? = nil,
    kernel: AttentionKernel = .flash, workers: Int? = nil, keySplit: KeySplit = .automatic
) throws -> Tensor {
    try scaledDotProductAttention(
        queries: queries, keys: keys, values: values, nHeads: nHeads, numKVHeads: numKVHeads,
        scale: scale, isCausal: isCausal, mask: mask, kernel: kernel, workers: workers,
        keySplit: keySplit, blockSizes: nil)
}

func scaledDotProductAttention(
    queries: Tensor, keys: Tensor, values: Tensor, nHeads: Int, numKVHeads: Int,
    scale: Float?, isCausal: Bool, mask: Tensor?, kernel: AttentionKernel, workers: Int?,
    keySplit: KeySplit, blockSizes: FlashBlockSizes?
) throws -> Tensor {
    func fail(_ message: String) -> AttentionError { .invalidInput(message) }
    guard nHeads > 0 else { throw fail("nHeads (\(nHeads)) must be > 0") }
    guard numKVHeads > 0, nHeads % numKVHeads == 0 else {
        throw fail("numKVHeads (\(numKVHeads)) must be > 0 and divide nHeads (\(nHeads))")
    }
    guard queries.rank == 3, queries.shape[2] % nHeads == 0, queries.shape[2] > 0 else {
        throw fail("queries shape \(queries.shape) must be [batch, seq, nHeads · headDim] with nHeads \(nHeads)")
    }
    let batch = queries.shape[0], n = queries.shape[1], headDim = queries.shape[2] / nHeads
    guard keys.rank == 3, keys.shape[0] == batch, keys.shape[2] == numKVHeads * headDim else {
        throw fail("keys shape \(keys.shape) must be [\(batch), keyLength, \(numKVHeads * headDim)]")
    }
    let keyCount = keys.shape[1]
    guard values.shape == keys.shape else {
        throw fail("values shape \(values.shape) must equal keys shape \(keys.shape)")
    }
    if let scale, !scale.isFinite {
        throw fail("scale (\(scale)) must be finite")
    }
    let limit = AttentionLimits.maxDimension
    for (name, value) in [("batch · queryLength", batch * n), ("batch · keyLength", batch * keyCount)]
    where value > limit {
        throw AttentionError.sizeLimitExceeded(
            "\(name) (\(value)) must be <= \(limit), BLAS's 32-bit size limit")
    }
    _ = try checkedElementCount([n, keyCount], of: "score matrix [queryLength, keyLength]")
    let layout = try mask.map {
        try MaskLayout.validate($0, batch: batch, heads: nHeads, queryCount: n, widths: [keyCount],
                                context: "for batch \(batch), nHeads \(nHeads), queryLength \(n), keyLength \(keyCount)")
    }

    var context = [Float](repeating: 0, count: queries.count)
    // No key at all: every query sees nothing, so the result is zeros.
    guard batch * n > 0, keyCount > 0 else { return try Tensor(shape: queries.shape, scalars: context) }
    let kvWidth = numKVHeads * headDim
    queries.scalars.withUnsafeBufferPointer { q in
    keys.scalars.withUnsafeBufferPointer { k in
    values.scalars.withUnsafeBufferPointer { v in
    (mask?.scalars ?? []).withUnsafeBufferPointer { m in
    context.withUnsafeMutableBufferPointer { context in
        let problem = AttentionProblem(
            batch: batch, queryCount: n, nHeads: nHeads, numKVHeads: numKVHeads, headDim: headDim,
            queries: q.baseAddress!, queryFirstPosition: keyCount - n,
            segments: (0..<batch).map { b in
                [KeyValueSegment(keys: k.baseAddress! + b * keyCount * kvWidth,
                                 values: v.baseAddress! + b * keyCount * kvWidth,
                                 rowStride: kvWidth, rowCount: keyCount, firstPosition: 0, isSink: false,
                                 firstMaskColumn: 0)]
            },
            mask: layout.map {
                AdditiveMask(scalars: m.baseAddress!, batchStride: $0.batchStride,
                             headStride: $0.headStride, rowStride: $0.width)
            },
            isCausal: isCausal, scale: scale ?? 1 / Float(headDim).squareRoot(), dropout: nil,
            context: context.baseAddress!)
        switch kernel {
        case .flash: FlashAttention.run(problem, blockSizes: blockSizes, workers: workers, keySplit: keySplit)
        case .reference: ReferenceAttention.run(problem)
        }
    }}}}}
    return try Tensor(shape: queries.shape, scalars: context)
}
