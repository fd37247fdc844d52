/// A run of key/value rows that the attention kernels read in place.
///
/// Keys and values arrive as a short list of segments rather than one concatenated matrix:
/// sinks are the first segment, this call's tokens the last, and a cache can add segments in
/// between. A new source of keys needs no copy and no new kernel.
struct KeyValueSegment: @unchecked Sendable {
    /// Row 0, key/value head 0 of `[rowCount, numKVHeads * headDim]` keys (post-RoPE).
    var keys: UnsafePointer<Float>
    /// Row 0, key/value head 0 of the matching values.
    var values: UnsafePointer<Float>
    /// Elements between consecutive rows of `keys` and of `values`.
    var rowStride: Int
    var rowCount: Int
    /// RoPE position of row 0; row `r` sits at `firstPosition + r`.
    var firstPosition: Int
    /// Sinks are visible to every query: the causal rule never hides them.
    var isSink: Bool
    /// Mask column of row 0, or `nil` when the additive mask does not cover this segment
    /// (its additive term is then 0).
    var firstMaskColumn: Int?
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

/// Everything an attention kernel reads and writes for one `forward` call, post projection
/// and post RoPE.
///
///     context[b, i, h] = Σ_j P[b, h, i, j] · V[b, j, h / groupSize]
///     P[b, h, i, :] = dropout(softmax(scale · Q[b, i, h] · K[b, :, h / groupSize]ᵀ + mask[b, h, i, :]))
///
/// with keys `j` running over every segment of `segments[b]` in order, causal masking by
/// position, and a row that sees no key left as zeros.
///
/// `@unchecked Sendable`: the pointers stay valid for the whole kernel call, inputs are only
/// read, and parallel workers write disjoint (batch, head, query block) slices of `context`.
struct AttentionProblem: @unchecked Sendable {
    var batch: Int
    var queryCount: Int
    var nHeads: Int
    var numKVHeads: Int
    var headDim: Int
    /// `[batch, queryCount, nHeads * headDim]`, rows contiguous.
    var queries: UnsafePointer<Float>
    /// RoPE position of query row 0 (every batch row starts at the same position).
    var queryFirstPosition: Int
    /// `segments[b]`: the keys and values batch row `b` attends over.
    var segments: [[KeyValueSegment]]
    var mask: AdditiveMask?
    var isCausal: Bool
    var scale: Float
    var dropout: DropoutMask?
    /// `[batch, queryCount, nHeads * headDim]`, fully overwritten.
    var context: UnsafeMutablePointer<Float>

    var queryRowStride: Int { nHeads * headDim }
    var groupSize: Int { nHeads / numKVHeads }

    /// Whether key position `keyPosition` of `segment` is hidden from the query at
    /// `queryPosition` by the causal rule.
    @inline(__always)
    func isCausallyHidden(_ segment: KeyValueSegment, keyPosition: Int, queryPosition: Int) -> Bool {
        isCausal && !segment.isSink && keyPosition > queryPosition
    }
}
