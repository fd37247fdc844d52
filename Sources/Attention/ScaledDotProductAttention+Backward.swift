/// dL/dq, dL/dk and dL/dv of one ``scaledDotProductAttentionWithPullback(queries:keys:values:nHeads:numKVHeads:scale:isCausal:mask:kernel:workers:keySplit:)``
/// call, each shaped (and laid out) like the tensor it differentiates.
public struct AttentionInputGradients: Sendable {
    public let queries: Tensor
    public let keys: Tensor
    public let values: Tensor
}

/// ``scaledDotProductAttention(queries:keys:values:nHeads:numKVHeads:scale:isCausal:mask:kernel:workers:keySplit:)``,
/// and a pullback that turns `dOut = dL/dout` into the gradients of the queries, keys and values
/// (the mask gets none), as PyTorch's autograd does for `scaled_dot_product_attention`:
///
///     P = softmax(scale · q·kᵀ + mask);  out = P·v
///     dv = Pᵀ·dOut;  dP = dOut·vᵀ;  dS = P∘(dP − rowsum(dOut∘out))
///     dq = scale · dS·k;  dk = scale · dSᵀ·q
///
/// with each key/value head's `dk`, `dv` summed over its group of query heads (keys and values
/// are never repeated for grouped-query attention).
///
/// With ``AttentionKernel/flash`` the forward keeps one log-sum-exp per query row beside its
/// output and the pullback runs the FlashAttention-2 backward: `P` recomputed per block, nothing
/// `N × N` stored, extra memory per call `O(batch · nHeads · queryLength)` plus a few blocks per
/// worker. ``AttentionKernel/reference`` materialises `P` per (batch row, key/value head).
///
/// - Parameters: as ``scaledDotProductAttention(queries:keys:values:nHeads:numKVHeads:scale:isCausal:mask:kernel:workers:keySplit:)``;
///   the output is that function's, bit for bit.
/// - Returns: the output and the pullback: `@Sendable`, callable more than once and from any
///   thread; the gradients are bitwise identical for every worker count.
/// - Throws: what the forward throws; the pullback throws ``AttentionError/invalidInput(_:)``
///   for a `dOut` not shaped like `queries` or holding NaN or ±∞.
public func scaledDotProductAttentionWithPullback(
    queries: Tensor, keys: Tensor, values: Tensor, nHeads: Int, numKVHeads: Int,
    scale: Float? = nil, isCausal: Bool = false, mask: Tensor? = nil,
    kernel: AttentionKernel = .flash, workers: Int? = nil, keySplit: KeySplit = .automatic
) throws -> (output: Tensor, pullback: @Sendable (Tensor) throws -> AttentionInputGradients) {
    let call = try AttentionCall(queries: queries, keys: keys, values: values, nHeads: nHeads,
                                 numKVHeads: numKVHeads, scale: scale, isCausal: isCausal, mask: mask)
    let rows = call.batch * call.queryCount
    var context = AlignedBuffer(zeros: queries.count)
    var logSumExp = kernel == .flash ? AlignedBuffer(zeros: call.batch * nHeads * call.queryCount) : nil
    let runs = rows > 0 && call.keyCount > 0
    if runs {
        let options = KernelOptions(kernel: kernel, workers: workers, keySplit: keySplit)
        let contextPointer = context.mutablePointer, logSumExpPointer = logSumExp?.mutablePointer
        withExtendedLifetime((context, logSumExp)) {
            call.withProblem(context: contextPointer) { problem in
                var problem = problem
                problem.logSumExp = logSumExpPointer
                problem.run(options)
            }
        }
    }
    let output = try Tensor(shape: queries.shape, scalars: call.inQueryLayout(context.array))
    let saved = (context, logSumExp)
    return (output, { dOut in
        guard dOut.shape == call.queryShape else {
            throw AttentionError.invalidInput("dOut shape \(dOut.shape) must equal the shape of queries, \(call.queryShape)")
        }
        try MultiHeadAttention.requireFinite(dOut, name: "dOut")
        let (context, logSumExp) = saved
        // Written in place: the gradients returned are the only output-sized buffers.
        var dQueries = [Float](repeating: 0, count: queries.count)
        var dKeys = [Float](repeating: 0, count: call.batch * call.keyCount * call.kvWidth)
        var dValues = [Float](repeating: 0, count: dKeys.count)
        if runs {
            let perRow = call.keyCount * call.kvWidth
            let contextGradient = call.tokenMajor(dOut.scalars)
            withExtendedLifetime((context, logSumExp)) {
            dQueries.withUnsafeMutableBufferPointer { dQ in
            dKeys.withUnsafeMutableBufferPointer { dK in
            dValues.withUnsafeMutableBufferPointer { dV in
                let (dQ, dK, dV) = (dQ.baseAddress!, dK.baseAddress!, dV.baseAddress!)
                contextGradient.withUnsafeBufferPointer { contextGradient in
                    call.withProblem(context: UnsafeMutablePointer(mutating: context.pointer)) { problem in
                        let buffers = AttentionBackwardBuffers(
                            contextGradient: contextGradient.baseAddress!, context: context.pointer, queries: dQ,
                            keys: (0..<call.batch).map { [dK + $0 * perRow] },
                            values: (0..<call.batch).map { [dV + $0 * perRow] })
                        let workerCount = max(1, workers ?? FlashAttention.defaultWorkerCount)
                        if let logSumExp {
                            FlashBackward.run(problem, buffers: buffers, logSumExp: logSumExp.pointer,
                                              blocks: FlashBackward.defaultBlocks, keySplit: keySplit, workers: workerCount)
                        } else {
                            ReferenceBackward.run(problem, buffers: buffers, workers: workerCount)
                        }
                    }
                }
            }
            }
            }
            }
        }
        // The kernels write dK, dV token-major, `[batch, keyLength, numKVHeads · headDim]`.
        func inKeyLayout(_ scalars: [Float]) throws -> Tensor {
            let scalars = call.headMajorKeys
                ? swapAxes1And2(scalars, batch: call.batch, outer: call.keyCount, inner: call.numKVHeads,
                                width: call.headDim)
                : scalars
            return try Tensor(shape: call.keyShape, scalars: scalars)
        }
        return AttentionInputGradients(
            queries: try Tensor(shape: call.queryShape, scalars: call.inQueryLayout(dQueries)),
            keys: try inKeyLayout(dKeys), values: try inKeyLayout(dValues))
    })
}
