import AttentionKernelInterface
import Foundation

/// The flash kernel's backward pass (FlashAttention-2, DESIGN.md §3b), blocked so that nothing
/// `N × N` is ever stored. Per (query block, key block) it recomputes, in base 2 as the forward
/// does,
///
///     S = scale · Q·Kᵀ + mask (−∞ where a rule hides a key);  P = exp(S − L);  P̃ = P∘Z
///     dP̃ = dO·Vᵀ;  dS = P∘(dP̃∘Z − D)
///     dV += P̃ᵀ·dO;  dK += scale · dSᵀ·Q;  dQ += scale · dS·K
///
/// with `L` each row's log-sum-exp, as the flash forward kept it (``AttentionProblem/logSumExp``,
/// `[batch, nHeads, queryCount]`, `+∞` for rows that see nothing), and `D_i = dO_i·O_i`, computed
/// once per row first: five block products per block pair, one `sgemm` each.
///
/// One work item per (batch row, key/value head, key chunk): the keys of a batch row (every
/// segment in order) are cut into key blocks and the blocks into chunks of about equal work.
/// An item walks its key blocks in order; for each, every query head of the group and every
/// query block that can see it, in order. It alone writes its key blocks' `dK` and `dV`, so
/// those need no reduction. Its `dQ` contributions go straight into `dQ` for chunk 0 and into
/// a partial `dQ` of its own for the others, which are added to `dQ` afterwards in chunk order.
/// Every sum runs in an order fixed by the shapes, never by the workers, so the gradients are
/// bitwise identical for every worker count; the chunk count is chosen for the processors,
/// as the forward's key split is (``KeySplit``).
///
/// Extra memory: per worker two `[queryBlock, keyBlock]` blocks; `L` and `D` per row; and with
/// `C` chunks, `C − 1` partial `dQ`s of `[queryCount, groupSize · headDim]` per (batch row, key/
/// value head), of which only the rows that see a chunk's keys are touched. `C` is 1 when batch ×
/// key/value heads alone give every processor two items, else about four per processor, as far
/// as the partials fit in max(one dQ, 64 MiB) (one key/value head at N = 16,384 and dModel 768:
/// two chunks).
enum FlashBackward {
    /// 64 queries × 128 keys: the blocks of a worker stay in L1/L2, and the key-block products
    /// (`k` = 64 query rows) and the `dQ` product (`k` = 128 keys) are large enough for sgemm.
    static let defaultBlocks = FlashBlockSizes(queryBlock: 64, keyBlock: 128)

    static func run(
        _ problem: AttentionProblem, buffers gradients: AttentionBackwardBuffers, logSumExp: UnsafePointer<Float>,
        blocks: FlashBlockSizes, keySplit: KeySplit = .automatic, workers: Int
    ) {
        gradients.zeroGradients(of: problem)
        let n = problem.queryCount
        guard n > 0 else { return }
        let bq = min(blocks.queryBlock, n)
        let plan = Plan(problem, queryBlock: bq, keyBlock: blocks.keyBlock, keySplit: keySplit)
        let statistics = RowStatistics(count: problem.batch * problem.nHeads * n, forwardLogSumExp: logSumExp)
        defer { statistics.deallocate() }
        let partialWidth = problem.groupSize * problem.headDim
        let partialCount = plan.chunks > 1 ? problem.batch * problem.numKVHeads * (plan.chunks - 1) * n * partialWidth : 0
        let partials = PartialGradients(count: partialCount)
        defer { partials.deallocate() }
        let scratchCount = 2 * bq * plan.keyStride

        BLAS.withSingleThreadedCalls {
            // L in base 2 and D per (batch row, head, query).
            WorkerPool.forEach(problem.batch * problem.nHeads * plan.queryBlocks, workers: workers) { item in
                let (bh, block) = item.quotientAndRemainder(dividingBy: plan.queryBlocks)
                rowStatistics(problem, batch: bh / problem.nHeads, head: bh % problem.nHeads,
                              queries: plan.queries(block), buffers: gradients, statistics: statistics)
            }

            // dK, dV per key block; dQ per chunk.
            WorkerPool.forEach(problem.batch * problem.numKVHeads * plan.chunks, workers: workers,
                               scratchCount: scratchCount) { item, scratch in
                let chunk = item % plan.chunks, bg = item / plan.chunks
                let b = bg / problem.numKVHeads, kvHead = bg % problem.numKVHeads
                let target: QueryGradientTarget
                if chunk == 0 {
                    target = .direct
                } else {
                    let partial = partials.base + ((bg * (plan.chunks - 1)) + chunk - 1) * n * partialWidth
                    // Each item zeroes its own, in parallel, and only the rows it can reach.
                    let rows = plan.partialRows(batch: b, chunk: chunk)
                    (partial + rows.lowerBound * partialWidth).update(repeating: 0, count: rows.count * partialWidth)
                    target = .partial(partial, rowStride: partialWidth)
                }
                for keyBlock in plan.keyBlocks[b][plan.chunkBlocks[b][chunk]] {
                    for member in 0..<problem.groupSize {
                        let h = kvHead * problem.groupSize + member
                        for block in 0..<plan.queryBlocks {
                            differentiateBlock(problem, plan: plan, batch: b, head: h, queries: plan.queries(block),
                                               keyBlock: keyBlock, buffers: gradients, statistics: statistics,
                                               queryGradient: target, scratch: scratch)
                        }
                    }
                }
            }

            // dQ += the partials of chunks 1, 2, … in order.
            guard plan.chunks > 1 else { return }
            WorkerPool.forEach(problem.batch * problem.numKVHeads * plan.queryBlocks, workers: workers) { item in
                let (bg, block) = item.quotientAndRemainder(dividingBy: plan.queryBlocks)
                let b = bg / problem.numKVHeads, kvHead = bg % problem.numKVHeads
                let ldq = problem.queryRowStride
                for i in plan.queries(block) {
                    let dQ = gradients.queries + (b * n + i) * ldq + kvHead * partialWidth
                    for chunk in 1..<plan.chunks where block >= plan.firstQueryBlocks[b][chunk] {
                        let partial = partials.base + ((bg * (plan.chunks - 1)) + chunk - 1) * n * partialWidth
                            + i * partialWidth
                        for e in 0..<partialWidth { dQ[e] += partial[e] }
                    }
                }
            }
        }
    }

    /// Where a work item adds `scale · dS·K`.
    private enum QueryGradientTarget {
        /// `dQ` itself (chunk 0).
        case direct
        /// A partial `[queryCount, groupSize · headDim]` of the item's own: query row `i`, group
        /// member `m` at `base + i · rowStride + m · headDim`.
        case partial(UnsafeMutablePointer<Float>, rowStride: Int)
    }

    /// One key block of one batch row: `keys` rows of `segments[b][segment]`.
    struct KeyBlock {
        var segment: Int
        var keys: Range<Int>
    }

    /// The blocking of one backward call, from the shapes alone.
    struct Plan: Sendable {
        let queryCount: Int, queryBlock: Int, queryBlocks: Int
        /// Row stride of the score and gradient blocks: the widest key block, in whole SIMD vectors.
        let keyStride: Int
        /// Per batch row, its key blocks in order (segments in order, each cut into blocks).
        let keyBlocks: [[KeyBlock]]
        /// Key chunks per batch row (every row the same count; a row with fewer key blocks has
        /// empty chunks).
        let chunks: Int
        /// Per batch row, the key blocks of each chunk.
        let chunkBlocks: [[Range<Int>]]
        /// Per batch row and chunk, the first query block that sees any of the chunk's keys
        /// (`queryBlocks` when none does).
        let firstQueryBlocks: [[Int]]

        /// Bytes the automatic split may spend on partial dQs beyond one dQ's worth.
        static let partialBudget = 64 << 20

        init(_ problem: AttentionProblem, queryBlock: Int, keyBlock: Int, keySplit: KeySplit) {
            queryCount = problem.queryCount
            self.queryBlock = queryBlock
            queryBlocks = (queryCount + queryBlock - 1) / queryBlock
            let maxKeys = problem.segments.map { $0.reduce(0) { $0 + $1.rowCount } }.max() ?? 0
            let bk = max(1, min(keyBlock, maxKeys))
            keyStride = FlashAttention.roundUp(bk, to: SoftmaxStep.vectorWidth)
            keyBlocks = problem.segments.map { segments in
                segments.indices.flatMap { s in
                    stride(from: 0, to: segments[s].rowCount, by: bk).map {
                        KeyBlock(segment: s, keys: $0..<min(segments[s].rowCount, $0 + bk))
                    }
                }
            }
            let mostBlocks = keyBlocks.map(\.count).max() ?? 0
            switch keySplit {
            case .never: chunks = 1
            case .chunks(let count): chunks = max(1, min(count, mostBlocks))
            case .automatic:
                // Without two items per processor from batch × heads: four per processor, so that
                // whole key blocks still balance (one key/value head at N = 1,024 has 9 blocks).
                // Per processor, not per worker: the chunks fix the summation order.
                let items = problem.batch * problem.numKVHeads
                let processors = FlashAttention.defaultWorkerCount
                let wanted = items >= 2 * processors ? 1 : max(1, min((4 * processors + items - 1) / items, mostBlocks))
                // Each chunk after the first costs a partial dQ: keep them all within
                // max(one dQ, 64 MiB), so many cores and long sequences cannot multiply memory.
                let partialBytes = max(1, problem.batch * problem.queryCount * problem.queryRowStride * 4)
                chunks = min(wanted, 1 + max(1, max(partialBytes, Self.partialBudget) / partialBytes))
            }
            // Chunks of about equal work: a key block costs the query blocks that can see it.
            var chunkBlocks: [[Range<Int>]] = [], firstQueryBlocks: [[Int]] = []
            let n = queryCount, blockCount = queryBlocks, chunks = chunks
            for (b, blocks) in keyBlocks.enumerated() {
                let seenBy = blocks.map { block in
                    (0..<blockCount).filter { q in
                        FlashBackward.isVisible(problem, batch: b, queries: (q * queryBlock)..<min(n, (q + 1) * queryBlock),
                                                segment: problem.segments[b][block.segment], keys: block.keys)
                    }
                }
                let work = seenBy.map(\.count)
                let total = work.reduce(0, +)
                var bounds = [0], done = 0
                for (index, cost) in work.enumerated() where bounds.count < chunks {
                    done += cost
                    // Close chunk `bounds.count` once its share of the work is done.
                    if done * chunks >= bounds.count * total && done > 0 { bounds.append(index + 1) }
                }
                while bounds.count <= chunks { bounds.append(blocks.count) }
                chunkBlocks.append((0..<chunks).map { bounds[$0]..<bounds[$0 + 1] })
                firstQueryBlocks.append((0..<chunks).map { chunk in
                    seenBy[bounds[chunk]..<bounds[chunk + 1]].compactMap(\.first).min() ?? blockCount
                })
            }
            self.chunkBlocks = chunkBlocks
            self.firstQueryBlocks = firstQueryBlocks
        }

        /// The query rows a chunk's partial `dQ` can receive: from the first query block that
        /// sees any of its keys (under the causal rule, later chunks reach only later rows).
        func partialRows(batch b: Int, chunk: Int) -> Range<Int> {
            min(queryCount, firstQueryBlocks[b][chunk] * queryBlock)..<queryCount
        }

        func queries(_ block: Int) -> Range<Int> {
            (block * queryBlock)..<min(queryCount, (block + 1) * queryBlock)
        }
    }

    /// Each row's log-sum-exp in base 2, `L · log₂e` (`+∞` for a row that sees nothing, so that
    /// its weights are 0), and `D = dO·O`, `[batch, nHeads, queryCount]`.
    private struct RowStatistics: @unchecked Sendable {
        let logSumExp: UnsafeMutablePointer<Float>
        let outputDot: UnsafeMutablePointer<Float>
        /// The forward's natural-log `L`, read once per row.
        let forwardLogSumExp: UnsafePointer<Float>
        init(count: Int, forwardLogSumExp: UnsafePointer<Float>) {
            self.forwardLogSumExp = forwardLogSumExp
            logSumExp = .allocate(capacity: count)
            outputDot = .allocate(capacity: count)
        }
        func deallocate() {
            logSumExp.deallocate()
            outputDot.deallocate()
        }
    }

    /// The partial `dQ`s of chunks 1, 2, …; each work item zeroes its own before adding into it.
    private struct PartialGradients: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>
        init(count: Int) {
            base = .allocate(capacity: max(1, count))
        }
        func deallocate() { base.deallocate() }
    }

    /// `S = log₂e · scale · Q_h[queries] · K_g[keys]ᵀ` (base 2, no mask yet) into `scores`, row
    /// stride `plan.keyStride`.
    private static func scores(
        _ problem: AttentionProblem, plan: Plan, batch b: Int, head h: Int, queries: Range<Int>,
        segment: KeyValueSegment, keys: Range<Int>, into scores: UnsafeMutablePointer<Float>
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride
        BLAS.gemm(transposeB: true, m: queries.count, n: keys.count, k: d, alpha: problem.scale * FlashAttention.log2e,
                  a: problem.queries + (b * n + queries.lowerBound) * ldq + h * d, lda: ldq,
                  b: segment.keys + keys.lowerBound * segment.rowStride
                      + segment.headOffset(h / problem.groupSize, headDim: d),
                  ldb: segment.rowStride, c: scores, ldc: plan.keyStride)
    }

    /// Columns of `keys` (of `segment`) that the causal and window rules let a query at
    /// `queryPosition` see.
    @inline(__always)
    private static func visibleColumns(
        _ problem: AttentionProblem, segment: KeyValueSegment, keys: Range<Int>, queryPosition: Int
    ) -> Range<Int> {
        guard !segment.isSink else { return 0..<keys.count }
        let visible = problem.visibleTokenPositions(forQueryAt: queryPosition)
        let first = segment.firstPosition + keys.lowerBound
        let start = max(0, min(keys.count, visible.lowerBound - first))
        return start..<max(start, min(keys.count, visible.upperBound - first + 1))
    }

    /// The mask's values for query `i` of head `h` over `keys` of `segment`, when a mask covers it.
    @inline(__always)
    private static func maskRow(
        _ problem: AttentionProblem, batch b: Int, head h: Int, query i: Int, segment: KeyValueSegment,
        keys: Range<Int>
    ) -> UnsafePointer<Float>? {
        guard let mask = problem.mask, let first = segment.firstMaskColumn else { return nil }
        return mask.row(batch: b, head: h, query: i) + first + keys.lowerBound
    }

    /// `L₂ = L · log₂e` and `D = dO·O` for the rows `queries` of head `h`.
    private static func rowStatistics(
        _ problem: AttentionProblem, batch b: Int, head h: Int, queries: Range<Int>,
        buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics
    ) {
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride
        let first = (b * problem.nHeads + h) * n
        for i in queries {
            statistics.logSumExp[first + i] = statistics.forwardLogSumExp[first + i] * FlashAttention.log2e
            let o = gradients.context + (b * n + i) * ldq + h * d, dO = gradients.contextGradient + (b * n + i) * ldq + h * d
            var dot: Float = 0
            for e in 0..<d { dot += o[e] * dO[e] }
            statistics.outputDot[first + i] = dot
        }
    }

    /// Everything one (query block of head `h`, key block) contributes: `dV` and `dK` of the key
    /// block, `dQ` of the query block into `queryGradient`. Nothing when no query sees the block.
    private static func differentiateBlock(
        _ problem: AttentionProblem, plan: Plan, batch b: Int, head h: Int, queries: Range<Int>, keyBlock: KeyBlock,
        buffers gradients: AttentionBackwardBuffers, statistics: RowStatistics, queryGradient: QueryGradientTarget,
        scratch: UnsafeMutablePointer<Float>
    ) {
        let segment = problem.segments[b][keyBlock.segment], keys = keyBlock.keys
        guard isVisible(problem, batch: b, queries: queries, segment: segment, keys: keys) else { return }
        let n = problem.queryCount, d = problem.headDim, ldq = problem.queryRowStride, ldk = plan.keyStride
        let kvWidth = problem.numKVHeads * d, kvHead = h / problem.groupSize
        let weights = scratch, scoreGradient = scratch + queries.count * ldk
        let dOutput = gradients.contextGradient + (b * n + queries.lowerBound) * ldq + h * d
        let keyRows = segment.keys + keys.lowerBound * segment.rowStride + segment.headOffset(kvHead, headDim: d)
        let valueRows = segment.values + keys.lowerBound * segment.rowStride + segment.headOffset(kvHead, headDim: d)

        scores(problem, plan: plan, batch: b, head: h, queries: queries, segment: segment, keys: keys, into: weights)
        // dP̃ = dO · Vᵀ
        BLAS.gemm(transposeB: true, m: queries.count, n: keys.count, k: d, a: dOutput, lda: ldq,
                  b: valueRows, ldb: segment.rowStride, c: scoreGradient, ldc: ldk)
        let paddedCount = FlashAttention.roundUp(keys.count, to: SoftmaxStep.vectorWidth)
        for (r, i) in queries.enumerated() {
            let index = (b * problem.nHeads + h) * n + i
            let queryPosition = problem.queryFirstPositions[b] + i
            let real = i < problem.queryCounts[b]
            let dropout = problem.dropout.map { dropout in
                DropoutRow(rowKey: dropout.rowKey(batch: b, head: h, queryPosition: queryPosition),
                           threshold: dropout.threshold, keepScale: dropout.keepScale,
                           firstKeyPosition: segment.firstPosition + keys.lowerBound)
            }
            Kernels.active.backwardStep(BackwardStep(
                scores: weights + r * ldk, gradient: scoreGradient + r * ldk, count: keys.count,
                paddedCount: paddedCount,
                visible: real ? visibleColumns(problem, segment: segment, keys: keys, queryPosition: queryPosition) : 0..<0,
                mask: real ? maskRow(problem, batch: b, head: h, query: i, segment: segment, keys: keys) : nil,
                logSumExp: statistics.logSumExp[index], outputDot: statistics.outputDot[index], dropout: dropout))
        }
        // dV += P̃ᵀ · dO;  dK += scale · dSᵀ · Q
        BLAS.gemm(transposeA: true, m: keys.count, n: d, k: queries.count, a: weights, lda: ldk,
                  b: dOutput, ldb: ldq, beta: 1,
                  c: gradients.values[b][keyBlock.segment] + keys.lowerBound * kvWidth + kvHead * d, ldc: kvWidth)
        BLAS.gemm(transposeA: true, m: keys.count, n: d, k: queries.count, alpha: problem.scale,
                  a: scoreGradient, lda: ldk, b: problem.queries + (b * n + queries.lowerBound) * ldq + h * d, ldb: ldq,
                  beta: 1, c: gradients.keys[b][keyBlock.segment] + keys.lowerBound * kvWidth + kvHead * d, ldc: kvWidth)
        // dQ += scale · dS · K
        let (dQueries, ldc): (UnsafeMutablePointer<Float>, Int)
        switch queryGradient {
        case .direct:
            (dQueries, ldc) = (gradients.queries + (b * n + queries.lowerBound) * ldq + h * d, ldq)
        case .partial(let base, let rowStride):
            (dQueries, ldc) = (base + queries.lowerBound * rowStride + (h % problem.groupSize) * d, rowStride)
        }
        BLAS.gemm(m: queries.count, n: d, k: keys.count, alpha: problem.scale, a: scoreGradient, lda: ldk,
                  b: keyRows, ldb: segment.rowStride, beta: 1, c: dQueries, ldc: ldc)
    }

    /// Whether any key of the block may be visible to any real query of the block: false when
    /// every query is padding, or the causal rule hides the whole block (its first key lies past
    /// the last query), or the window hides it (its last key lies before the first query's window).
    static func isVisible(
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
