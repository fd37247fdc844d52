import Foundation

/// The reference kernel: materialises every score, then softmax, then `P·V`, reading like the
/// math. It is the oracle the flash kernel is tested against.
///
/// Per (batch row `b`, head `h`), with `K` and `V` the keys and values of every segment in order:
///
///     S = scale · Q_h · K_kvᵀ                 (sgemm per segment, read in place)
///     S[i, j] += mask[i, j];  S[i, j] = −∞ where the causal or window rule hides key j from query i
///     P[i, :] = softmax(S[i, :]), or zeros when every S[i, j] is −∞
///     P[i, j] *= dropout factor (0 or 1/(1−p))
///     context_h = P · V_kv                    (sgemm per segment, accumulated)
///
/// Extra memory: one `[queryCount, keyCount]` score matrix per worker, reused across heads.
enum ReferenceAttention {
    /// Runs every (batch row, head) as one work item on up to `workers` workers; each worker
    /// reuses one score matrix. The items write disjoint columns of the context.
    static func run(_ problem: AttentionProblem, workers: Int) {
        guard problem.queryCount > 0 else { return }
        let keyCounts = problem.segments.map { $0.reduce(0) { $0 + $1.rowCount } }
        let scoreCapacity = problem.queryCount * (keyCounts.max() ?? 0)
        WorkerPool.forEach(problem.batch * problem.nHeads, workers: workers, scratchCount: scoreCapacity) { item, scores in
            attend(problem, batch: item / problem.nHeads, head: item % problem.nHeads,
                   keyCount: keyCounts[item / problem.nHeads], scores: scores)
        }
    }

    /// One (batch row `b`, head `h`): scores, mask, softmax, dropout, `P·V`, into the context.
    private static func attend(
        _ problem: AttentionProblem, batch b: Int, head h: Int, keyCount: Int, scores: UnsafeMutablePointer<Float>
    ) {
        let n = problem.queryCount, d = problem.headDim
        let ldq = problem.queryRowStride
        let segments = problem.segments[b]
        let kvHead = h / problem.groupSize
        let queries = problem.queries + b * n * ldq + h * d
        let context = problem.context + b * n * ldq + h * d

        var column = 0
        for segment in segments {
            BLAS.gemm(transposeB: true, m: n, n: segment.rowCount, k: d,
                      alpha: problem.scale,
                      a: queries, lda: ldq,
                      b: segment.keys + segment.headOffset(kvHead, headDim: d), ldb: segment.rowStride,
                      c: scores + column, ldc: keyCount)
            column += segment.rowCount
        }

        let realRows = problem.queryCounts[b]
        for i in 0..<n {
            let row = scores + i * keyCount
            guard i < realRows else {
                // Padding query: attends to nothing.
                row.update(repeating: 0, count: keyCount)
                continue
            }
            maskRow(row, batch: b, head: h, query: i, segments: segments, problem: problem)
            softmaxRow(row, count: keyCount)
            if let dropout = problem.dropout {
                dropRow(row, dropout: dropout, batch: b, head: h, query: i,
                        segments: segments, problem: problem)
            }
        }

        if keyCount == 0 {
            for i in 0..<n { (context + i * ldq).update(repeating: 0, count: d) }
        }
        column = 0
        for segment in segments {
            BLAS.gemm(m: n, n: d, k: segment.rowCount,
                      a: scores + column, lda: keyCount,
                      b: segment.values + segment.headOffset(kvHead, headDim: d), ldb: segment.rowStride,
                      beta: column == 0 ? 0 : 1,
                      c: context, ldc: ldq)
            column += segment.rowCount
        }
    }

    /// Adds the additive mask and applies the causal and window rules to one row of scores.
    static func maskRow(
        _ row: UnsafeMutablePointer<Float>, batch: Int, head: Int, query: Int,
        segments: [KeyValueSegment], problem: AttentionProblem
    ) {
        let queryPosition = problem.queryFirstPositions[batch] + query
        let maskRow = problem.mask?.row(batch: batch, head: head, query: query)
        var column = 0
        for segment in segments {
            for r in 0..<segment.rowCount {
                if let maskRow, let first = segment.firstMaskColumn {
                    row[column + r] += maskRow[first + r]
                }
                if problem.isHidden(segment, keyPosition: segment.firstPosition + r, queryPosition: queryPosition) {
                    row[column + r] = -.infinity
                }
            }
            column += segment.rowCount
        }
    }

    /// Softmax in place; a row with no visible key (every score −∞) becomes zeros, and a row
    /// holding a NaN score (an overflow upstream) becomes NaN rather than a plausible number.
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, count: Int) {
        var maximum = -Float.infinity
        for j in 0..<count {
            if row[j].isNaN {
                row.update(repeating: .nan, count: count)
                return
            }
            maximum = max(maximum, row[j])
        }
        guard maximum > -.infinity else {
            row.update(repeating: 0, count: count)
            return
        }
        var sum: Float = 0
        for j in 0..<count {
            let e = exp(row[j] - maximum)
            row[j] = e
            sum += e
        }
        let inverse = 1 / sum
        for j in 0..<count { row[j] *= inverse }
    }

    static func dropRow(
        _ row: UnsafeMutablePointer<Float>, dropout: DropoutMask, batch: Int, head: Int, query: Int,
        segments: [KeyValueSegment], problem: AttentionProblem
    ) {
        let rowKey = dropout.rowKey(batch: batch, head: head,
                                    queryPosition: problem.queryFirstPositions[batch] + query)
        var column = 0
        for segment in segments {
            for r in 0..<segment.rowCount {
                row[column + r] *= dropout.factor(rowKey: rowKey, keyPosition: segment.firstPosition + r)
            }
            column += segment.rowCount
        }
    }
}
