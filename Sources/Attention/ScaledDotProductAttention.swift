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
        [("batch · queryLength", "\(batch * n)", batch * n), ("batch · keyLength", "\(batch * keyCount)", batch * keyCount)],
        scoreMatrix: "score matrix [queryLength, keyLength]", queries: n, keys: keyCount)
    let validatedMask = try mask.map {
        ValidatedMask(tensor: $0, layout: try MaskLayout.validate(
            $0, batch: batch, heads: nHeads, queryCount: n, widths: [keyCount],
            context: "for batch \(batch), nHeads \(nHeads), queryLength \(n), keyLength \(keyCount)"))
    }

    // The kernels take token-major queries and write token-major outputs; one query row is
    // the same memory in both layouts.
    let transposesQueries = headMajorQueries && n > 1
    let tokenMajorQueries = transposesQueries
        ? swapAxes1And2(queries.scalars, batch: batch, outer: nHeads, inner: n, width: headDim)
        : queries.scalars
    var context = [Float](repeating: 0, count: queries.count)
    // No key at all: every query sees nothing, so the result is zeros.
    guard batch * n > 0, keyCount > 0 else { return try Tensor(shape: queries.shape, scalars: context) }
    let kvWidth = numKVHeads * headDim
    let options = KernelOptions(kernel: kernel, workers: workers, keySplit: keySplit)
    withUnsafePointers(to: [tokenMajorQueries, keys.scalars, values.scalars]) { inputs in
        let (q, k, v) = (inputs[0], inputs[1], inputs[2])
        context.withUnsafeMutableBufferPointer { context in
            validatedMask.withAdditiveMask { mask in
                AttentionProblem(
                    batch: batch, queryCount: n, nHeads: nHeads, numKVHeads: numKVHeads, headDim: headDim,
                    queries: q, queryFirstPosition: keyCount - n,
                    segments: (0..<batch).map { b in
                        [KeyValueSegment(keys: k + b * keyCount * kvWidth, values: v + b * keyCount * kvWidth,
                                         rowStride: headMajorKeys ? headDim : kvWidth,
                                         headStride: headMajorKeys ? keyCount * headDim : nil,
                                         rowCount: keyCount, firstPosition: 0, isSink: false, firstMaskColumn: 0)]
                    },
                    mask: mask, isCausal: isCausal, scale: scale ?? 1 / Float(headDim).squareRoot(), dropout: nil,
                    context: context.baseAddress!
                ).run(options)
            }
        }
    }
    if transposesQueries {
        context = swapAxes1And2(context, batch: batch, outer: n, inner: nHeads, width: headDim)
    }
    return try Tensor(shape: queries.shape, scalars: context)
}

/// `[batch, outer, inner, width]` → `[batch, inner, outer, width]`.
private func swapAxes1And2(_ scalars: [Float], batch: Int, outer: Int, inner: Int, width: Int) -> [Float] {
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
