import Foundation

/// The flash kernel's backward pass (FlashAttention-2, DESIGN.md §3b), blocked so that nothing
/// `N × N` is ever stored: per (query block, key block) it recomputes
///
///     S = scale · Q·Kᵀ + mask (−∞ where a rule hides a key);  P = exp(S − L);  P̃ = P∘Z
///     dP̃ = dO·Vᵀ;  dS = P∘(dP̃∘Z − D)
///
/// with `L` each row's log-sum-exp (kept by the flash forward, or computed here in a first pass)
/// and `D_i = dO_i·O_i`, computed once per row first, and
///
/// - pass A, one item per (batch row, key/value head, segment, key block): over every query
///   head of the group and every query block in order, `dV += P̃ᵀ·dO` and `dK += scale · dSᵀ·Q`
///   into that key block's rows, which no other item writes;
/// - pass B, one item per (batch row, query head, query block): over every key block in order,
///   `dQ += scale · dS·K` into that block's rows.
///
/// The sums run in a fixed order inside each item and no two items write the same element, so
/// the gradients are bitwise identical for every worker count; a segment shared by several
/// batch rows (the sinks) has one gradient buffer per row (``AttentionBackwardBuffers``). The
/// block products are one-thread `sgemm`s; scratch per worker is a few `[queryBlock, keyBlock]`
/// blocks.
enum FlashBackward {
    /// 64 queries × 64 keys: the score, weight and gradient blocks of a worker stay in L1/L2.
    static let defaultBlocks = FlashBlockSizes(queryBlock: 64, keyBlock: 64)

    static func run(
        _ problem: AttentionProblem, buffers gradients: AttentionBackwardBuffers, blocks: FlashBlockSizes, workers: Int
    ) {
        gradients.zeroGradients(of: problem)
        let n = problem.queryCount
        guard n > 0 else { return }
        let bq = min(blocks.queryBlock, n), bk = blocks.keyBlock
        let queryBlocks = (n + bq - 1) / bq
        let statistics = RowStatistics(count: problem.batch * problem.nHeads * n)
        defer { statistics.deallocate() }

        if let forwardLogSumExp = gradients.logSumExp {
            statistics.logSumExp.update(from: forwardLogSumExp, count: problem.batch * problem.nHeads * n)
        }
        let computesLogSumExp = gradients.logSumExp == nil
        BLAS.withSingleThreadedCalls {
            // L (unless the forward kept it) and D per (batch row, head, query).
            let rowItems = problem.batch * problem.nHeads * queryBlocks
            forEachItem(rowItems, workers: workers, bq: bq, bk: bk) { item, scratch in
                let (bh, block) = item.quotientAndRemainder(dividingBy: queryBlocks)
                let b = bh / problem.nHeads, h = bh % problem.nHeads
                let queries = (block * bq)..<min(n, (block + 1) * bq)
                rowStatistics(problem, batch: b, head: h, queries: queries, buffers: gradients,
                              statistics: statistics, computesLogSumExp: computesLogSumExp, scratch: scratch,
                              keyBlock: bk)
            }

            // Pass A: dK, dV per key block.
            let keyItems = KeyBlockItems(problem, keyBlock: bk)
            forEachItem(keyItems.items.count, workers: workers, bq: bq, bk: bk) { index, scratch in
                let item = keyItems.items[index]
                for member in 0..<problem.groupSize {
                    let h = item.kvHead * problem.groupSize + member
                    for block in 0..<queryBlocks {
                        let queries = (block * bq)..<min(n, (block + 1) * bq)
                        keyGradients(problem, batch: item.batch, head: h, queries: queries, segmentIndex: item.segment,
                                     keys: item.keys, buffers: gradients, statistics: statistics, scratch: scratch)
                    }
                }
            }

            // Pass B: dQ per query block.
            forEachItem(rowItems, workers: workers, bq: bq, bk: bk) { item, scratch in
                let (bh, block) = item.quotientAndRemainder(dividingBy: queryBlocks)
                let b = bh / problem.nHeads, h = bh % problem.nHeads
                let queries = (block * bq)..<min(n, (block + 1) * bq)
                for (s, segment) in problem.segments[b].enumerated() {
                    for start in stride(from: 0, to: segment.rowCount, by: bk) {
                        queryGradients(problem, batch: b, head: h, queries: queries, segmentIndex: s,
                                       keys: start..<min(segment.rowCount, start + bk), buffers: gradients,
                                       statistics: statistics, scratch: scratch)
                    }
                }
            }
        }
    }

    /// Pass A's items in order: (batch row, key/value head, segment, key block).
    private struct KeyBlockItems: Sendable {
        var items: [(batch: Int, kvHead: Int, segment: Int, keys: Range<Int>)] = []
        init(_ problem: AttentionProblem, keyBlock: Int) {
            for b in 0..<problem.batch {
                for g in 0..<problem.numKVHeads {
                    for (s, segment) in problem.segments[b].enumerated() {
                        for start in stride(from: 0, to: segment.rowCount, by: keyBlock) {
                            items.append((b, g, s, start..<min(segment.rowCount, start + keyBlock)))
                        }
                    }
                }
            }
        }
    }

    /// Each row's log-sum-exp `L` (natural log; +∞ for a row that sees nothing, so that its
    /// `P = exp(S − L)` is 0) and `D = dO·O`, `[batch, nHeads, queryCount]`.
    private struct RowStatistics: @unchecked Sendable {
        let logSumExp: UnsafeMutablePointer<Float>
        let outputDot: UnsafeMutablePointer<Float>
        init(count: Int) {
            logSumExp = .allocate(capacity: count)
            outputDot = .allocate(capacity: count)
        }
        func deallocate() {
            logSumExp.deallocate()
            outputDot.deallocate()
        }
    }

    /// Per-worker blocks: scores and weights `S`/`P`, `dP̃`/`dS`, and `P̃`, each
    /// `[queryBlock, keyBlock]` with row stride `keyBlock`.
    private struct Scratch {
        let scores: UnsafeMutablePointer<Float>
        let gradient: UnsafeMutablePointer<Float>
        let dropped: UnsafeMutablePointer<Float>
        let keyBlock: Int
    }

    private static func forEachItem(
        _ count: Int, workers: Int, bq: Int, bk: Int, _ body: @escaping @Sendable (Int, Scratch) -> Void
    ) {
        let block = bq * bk
        WorkerPool.forEach(count, workers: workers, scratchCount: 3 * block) { item, scratch in
            body(item, Scratch(scores: scratch, gradient: scratch + block, dropped: scratch + 2 * block, keyBlock: bk))
        }
    }

    /// `S = scale · Q_h[queries] · K_g[keys]ᵀ + mask`, −∞ where hidden, in `scratch.scores`
    /// (`[queries.count, keys.count]`, row stride `keyBlock`); padding rows all −∞.
    private static func scores(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>, segment: KeyValueSegment,
        keys: Range<Int>, scratch: Scratch
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let kvHead = h / problem.groupSize
        BLAS.gemm(transposeB: true, m: queries.count, n: keys.count, k: d, alpha: problem.scale,
                  a: problem.queries + (b * n + queries.lowerBound) * ldq + h * d, lda: ldq,
                  b: segment.keys + keys.lowerBound * segment.rowStride + segment.headOffset(kvHead, headDim: d),
                  ldb: segment.rowStride, c: scratch.scores, ldc: ldk)
        for (r, i) in queries.enumerated() {
            let row = scratch.scores + r * ldk
            guard i < problem.queryCounts[b] else {
                row.update(repeating: -.infinity, count: keys.count)
                continue
            }
            let queryPosition = problem.queryFirstPositions[b] + i
            let maskRow = problem.mask?.row(batch: b, head: h, query: i)
            for (c, key) in keys.enumerated() {
                if let maskRow, let first = segment.firstMaskColumn { row[c] += maskRow[first + key] }
                if problem.isHidden(segment, keyPosition: segment.firstPosition + key, queryPosition: queryPosition) {
                    row[c] = -.infinity
                }
            }
        }
    }

    private static func rowStatistics(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>,
        buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, computesLogSumExp: Bool,
        scratch: Scratch, keyBlock bk: Int
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride
        var maxima = [Float](repeating: -.infinity, count: queries.count)
        var sums = [Float](repeating: 0, count: queries.count)
        for segment in problem.segments[b] where computesLogSumExp {
            for start in stride(from: 0, to: segment.rowCount, by: bk) {
                let keys = start..<min(segment.rowCount, start + bk)
                scores(problem, batch: b, head: h, queries: queries, segment: segment, keys: keys, scratch: scratch)
                for r in 0..<queries.count {
                    let row = scratch.scores + r * scratch.keyBlock
                    var blockMax = -Float.infinity
                    for c in 0..<keys.count { blockMax = max(blockMax, row[c]) }
                    let newMax = max(maxima[r], blockMax)
                    guard newMax > -.infinity else { continue }
                    var sum = sums[r] * exp(maxima[r] - newMax)
                    for c in 0..<keys.count { sum += exp(row[c] - newMax) }
                    maxima[r] = newMax
                    sums[r] = sum
                }
            }
        }
        for (r, i) in queries.enumerated() {
            let index = (b * problem.nHeads + h) * n + i
            if computesLogSumExp {
                statistics.logSumExp[index] = sums[r] > 0 ? maxima[r] + log(sums[r]) : .infinity
            }
            let o = gradients.context + (b * n + i) * ldq + h * d, dO = gradients.contextGradient + (b * n + i) * ldq + h * d
            var dot: Float = 0
            for e in 0..<d { dot += o[e] * dO[e] }
            statistics.outputDot[index] = dot
        }
    }

    /// For one (query block, key block) of head `h`: `P` in `scratch.scores`, `P̃` in
    /// `scratch.dropped`, `dS` in `scratch.gradient`.
    private static func weightsAndScoreGradient(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>, segment: KeyValueSegment,
        keys: Range<Int>, buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, scratch: Scratch
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let kvHead = h / problem.groupSize
        scores(problem, batch: b, head: h, queries: queries, segment: segment, keys: keys, scratch: scratch)
        // dP̃ = dO · Vᵀ
        BLAS.gemm(transposeB: true, m: queries.count, n: keys.count, k: d,
                  a: gradients.contextGradient + (b * n + queries.lowerBound) * ldq + h * d, lda: ldq,
                  b: segment.values + keys.lowerBound * segment.rowStride + segment.headOffset(kvHead, headDim: d),
                  ldb: segment.rowStride, c: scratch.gradient, ldc: ldk)
        for (r, i) in queries.enumerated() {
            let index = (b * problem.nHeads + h) * n + i
            let logSumExp = statistics.logSumExp[index], outputDot = statistics.outputDot[index]
            let p = scratch.scores + r * ldk, dropped = scratch.dropped + r * ldk, dS = scratch.gradient + r * ldk
            let rowKey = problem.dropout?.rowKey(batch: b, head: h, queryPosition: problem.queryFirstPositions[b] + i)
            for (c, key) in keys.enumerated() {
                let weight = exp(p[c] - logSumExp)  // 0 for −∞ scores and for rows that see nothing
                let factor = problem.dropout.map { $0.factor(rowKey: rowKey!, keyPosition: segment.firstPosition + key) } ?? 1
                p[c] = weight
                dropped[c] = weight * factor
                dS[c] = weight == 0 ? 0 : weight * (dS[c] * factor - outputDot)
            }
        }
    }

    /// ``weightsAndScoreGradient(_:batch:head:queries:segment:keys:buffers:statistics:scratch:)``
    /// for a block that any real query may see; `false` (nothing computed) for one no query sees.
    private static func prepareBlock(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>, segment: KeyValueSegment,
        keys: Range<Int>, buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, scratch: Scratch
    ) -> Bool {
        guard isVisible(problem, batch: b, queries: queries, segment: segment, keys: keys) else { return false }
        weightsAndScoreGradient(problem, batch: b, head: h, queries: queries, segment: segment, keys: keys,
                                buffers: gradients, statistics: statistics, scratch: scratch)
        return true
    }

    private static func keyGradients(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>, segmentIndex s: Int,
        keys: Range<Int>, buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, scratch: Scratch
    ) {
        guard prepareBlock(problem, batch: b, head: h, queries: queries, segment: problem.segments[b][s], keys: keys,
                           buffers: gradients, statistics: statistics, scratch: scratch) else { return }
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let kvWidth = problem.numKVHeads * d, kvHead = h / problem.groupSize
        // dV += P̃ᵀ · dO;  dK += scale · dSᵀ · Q
        BLAS.gemm(transposeA: true, m: keys.count, n: d, k: queries.count, a: scratch.dropped, lda: ldk,
                  b: gradients.contextGradient + (b * n + queries.lowerBound) * ldq + h * d, ldb: ldq, beta: 1,
                  c: gradients.values[b][s] + keys.lowerBound * kvWidth + kvHead * d, ldc: kvWidth)
        BLAS.gemm(transposeA: true, m: keys.count, n: d, k: queries.count, alpha: problem.scale,
                  a: scratch.gradient, lda: ldk,
                  b: problem.queries + (b * n + queries.lowerBound) * ldq + h * d, ldb: ldq, beta: 1,
                  c: gradients.keys[b][s] + keys.lowerBound * kvWidth + kvHead * d, ldc: kvWidth)
    }

    private static func queryGradients(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>, segmentIndex s: Int,
        keys: Range<Int>, buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, scratch: Scratch
    ) {
        let segment = problem.segments[b][s]
        guard prepareBlock(problem, batch: b, head: h, queries: queries, segment: segment, keys: keys,
                           buffers: gradients, statistics: statistics, scratch: scratch) else { return }
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let kvHead = h / problem.groupSize
        // dQ += scale · dS · K
        BLAS.gemm(m: queries.count, n: d, k: keys.count, alpha: problem.scale, a: scratch.gradient, lda: ldk,
                  b: segment.keys + keys.lowerBound * segment.rowStride + segment.headOffset(kvHead, headDim: d),
                  ldb: segment.rowStride, beta: 1, c: gradients.queries + (b * n + queries.lowerBound) * ldq + h * d,
                  ldc: ldq)
    }

    /// Whether any key of the block may be visible to any real query of the block: false when
    /// every query is padding, or the causal rule hides the whole block (its first key lies past
    /// the last query), or the window hides it (its last key lies before the first query's window).
    private static func isVisible(
        _ problem: AttentionProblem, batch b: Int, queries: Range<Int>, segment: KeyValueSegment, keys: Range<Int>
    ) -> Bool {
        let lastReal = min(queries.upperBound, problem.queryCounts[b]) - 1
        guard lastReal >= queries.lowerBound, !keys.isEmpty else { return false }
        guard !segment.isSink else { return true }
        let first = problem.visibleTokenPositions(forQueryAt: problem.queryFirstPositions[b] + queries.lowerBound)
        let last = problem.visibleTokenPositions(forQueryAt: problem.queryFirstPositions[b] + lastReal)
        let firstKey = segment.firstPosition + keys.lowerBound, lastKey = segment.firstPosition + keys.upperBound - 1
        return firstKey <= last.upperBound && lastKey >= first.lowerBound
    }
}
