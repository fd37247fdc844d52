/// What one backward call (``ReferenceBackward``, ``FlashBackward``) reads besides the problem
/// (dL/d context, the context) and where it writes its gradients, all fully overwritten.
///
/// `@unchecked Sendable`: parallel items write disjoint parts (see ``ReferenceBackward``).
struct AttentionBackwardBuffers: @unchecked Sendable {
    /// dL/d context, laid out like `problem.context`.
    var contextGradient: UnsafePointer<Float>
    /// The forward's context `O`, for the flash backward's `D = dO·O`; the reference backward
    /// recomputes everything it needs.
    var context: UnsafePointer<Float>
    /// dL/dQ (post-RoPE), laid out like `problem.queries`.
    var queries: UnsafeMutablePointer<Float>
    /// dL/dK and dL/dV (post-RoPE keys), one buffer per batch row and segment, each
    /// `[segment.rowCount, numKVHeads · headDim]`: `keys[b][s]` belongs to `problem.segments[b][s]`.
    /// A segment that several batch rows share (the sinks) gets one buffer per row; summing
    /// them is the caller's.
    var keys: [[UnsafeMutablePointer<Float>]]
    var values: [[UnsafeMutablePointer<Float>]]

    /// Zeros in every gradient this call of `problem` writes, before the kernel adds into them.
    func zeroGradients(of problem: AttentionProblem) {
        let kvWidth = problem.numKVHeads * problem.headDim
        for b in 0..<problem.batch {
            for (s, segment) in problem.segments[b].enumerated() {
                keys[b][s].update(repeating: 0, count: segment.rowCount * kvWidth)
                values[b][s].update(repeating: 0, count: segment.rowCount * kvWidth)
            }
        }
        queries.update(repeating: 0, count: problem.batch * problem.queryCount * problem.queryRowStride)
    }
}

/// The reference kernel's backward pass: the readable, materialising oracle of the flash
/// backward (DESIGN.md §3b). Per (batch row `b`, key/value head `g`), for each query head `h`
/// of the group in order, with `K`, `V` every segment's keys and values in order and `Z` the
/// dropout factors:
///
///     S = scale · Q_h·K_gᵀ + mask,  −∞ where a rule hides a key;  P = softmax(S);  P̃ = P∘Z
///     dP̃ = dO_h · V_gᵀ;            dV_g += P̃ᵀ · dO_h
///     dP = dP̃∘Z;  D_i = Σ_j P_ij·dP_ij;  dS = P∘(dP − D)
///     dQ_h = scale · dS · K_g;     dK_g += scale · dSᵀ · Q_h
///
/// A row that sees nothing has `P = 0` and so contributes nothing. Each (b, g) item writes only
/// its own heads' columns of `dQ` and its own column slice of row `b`'s `dK`, `dV` buffers, and
/// sums over the group in a fixed order: results are bitwise identical for every worker count.
/// Extra memory per worker: two `[queryCount, keyCount]` matrices.
enum ReferenceBackward {
    static func run(_ problem: AttentionProblem, buffers gradients: AttentionBackwardBuffers, workers: Int) {
        gradients.zeroGradients(of: problem)
        let n = problem.queryCount
        guard n > 0 else { return }
        let keyCounts = problem.segments.map { $0.reduce(0) { $0 + $1.rowCount } }
        let capacity = n * (keyCounts.max() ?? 0)
        BLAS.withSingleThreadedCalls {
            // Per worker: P, then P̃ / dP̃ / dS, each [queryCount, keyCount].
            WorkerPool.forEach(problem.batch * problem.numKVHeads, workers: workers,
                               scratchCount: 2 * capacity) { item, scratch in
                let b = item / problem.numKVHeads, kvHead = item % problem.numKVHeads
                for member in 0..<problem.groupSize {
                    differentiate(problem, batch: b, head: kvHead * problem.groupSize + member,
                                  keyCount: keyCounts[b], buffers: gradients, weights: scratch,
                                  gradient: scratch + capacity)
                }
            }
        }
    }

    /// One query head `h` of batch row `b`: its `dQ` columns, and its share of `dK`, `dV`.
    private static func differentiate(
        _ problem: AttentionProblem, batch b: Int, head h: Int, keyCount: Int,
        buffers gradients: AttentionBackwardBuffers,
        weights: UnsafeMutablePointer<Float>, gradient: UnsafeMutablePointer<Float>
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride
        let kvWidth = problem.numKVHeads * d
        let segments = problem.segments[b]
        let kvHead = h / problem.groupSize
        let queries = problem.queries + b * n * ldq + h * d
        let dOutput = gradients.contextGradient + b * n * ldq + h * d
        let dQueries = gradients.queries + b * n * ldq + h * d
        guard keyCount > 0 else { return }

        // P, then P̃ in `gradient` for dV.
        var column = 0
        for segment in segments {
            BLAS.gemm(transposeB: true, m: n, n: segment.rowCount, k: d, alpha: problem.scale,
                      a: queries, lda: ldq,
                      b: segment.keys + segment.headOffset(kvHead, headDim: d), ldb: segment.rowStride,
                      c: weights + column, ldc: keyCount)
            column += segment.rowCount
        }
        for i in 0..<n {
            let row = weights + i * keyCount
            guard i < problem.queryCounts[b] else {
                // Padding query: attends to nothing, so P and P̃ are 0 (the scratch holds an
                // earlier item's rows otherwise).
                row.update(repeating: 0, count: keyCount)
                (gradient + i * keyCount).update(repeating: 0, count: keyCount)
                continue
            }
            ReferenceAttention.maskRow(row, batch: b, head: h, query: i, segments: segments, problem: problem)
            ReferenceAttention.softmaxRow(row, count: keyCount)
            (gradient + i * keyCount).update(from: row, count: keyCount)
            if let dropout = problem.dropout {
                ReferenceAttention.dropRow(gradient + i * keyCount, dropout: dropout, batch: b, head: h, query: i,
                                           segments: segments, problem: problem)
            }
        }
        column = 0
        for (s, segment) in segments.enumerated() {
            // dV_g += P̃ᵀ · dO_h
            BLAS.gemm(transposeA: true, m: segment.rowCount, n: d, k: n, a: gradient + column, lda: keyCount,
                      b: dOutput, ldb: ldq, beta: 1, c: gradients.values[b][s] + kvHead * d, ldc: kvWidth)
            // dP̃ = dO_h · V_gᵀ
            BLAS.gemm(transposeB: true, m: n, n: segment.rowCount, k: d, a: dOutput, lda: ldq,
                      b: segment.values + segment.headOffset(kvHead, headDim: d), ldb: segment.rowStride,
                      c: gradient + column, ldc: keyCount)
            column += segment.rowCount
        }
        for i in 0..<min(n, problem.queryCounts[b]) {
            let p = weights + i * keyCount, dp = gradient + i * keyCount
            if let dropout = problem.dropout {
                ReferenceAttention.dropRow(dp, dropout: dropout, batch: b, head: h, query: i,
                                           segments: segments, problem: problem)
            }
            // dS = P∘(dP − D) with D = Σ_j P_j·dP_j; 0 where P is 0 (hidden keys, empty rows).
            var weighted: Float = 0
            for j in 0..<keyCount { weighted += p[j] * dp[j] }
            for j in 0..<keyCount { dp[j] = p[j] == 0 ? 0 : p[j] * (dp[j] - weighted) }
        }
        for i in problem.queryCounts[b]..<max(n, problem.queryCounts[b]) {
            (gradient + i * keyCount).update(repeating: 0, count: keyCount)
        }
        column = 0
        for (s, segment) in segments.enumerated() {
            // dQ_h += scale · dS · K_g
            BLAS.gemm(m: n, n: d, k: segment.rowCount, alpha: problem.scale, a: gradient + column, lda: keyCount,
                      b: segment.keys + segment.headOffset(kvHead, headDim: d), ldb: segment.rowStride,
                      beta: 1, c: dQueries, ldc: ldq)
            // dK_g += scale · dSᵀ · Q_h
            BLAS.gemm(transposeA: true, m: segment.rowCount, n: d, k: n, alpha: problem.scale,
                      a: gradient + column, lda: keyCount, b: queries, ldb: ldq,
                      beta: 1, c: gradients.keys[b][s] + kvHead * d, ldc: kvWidth)
            column += segment.rowCount
        }
    }
}
