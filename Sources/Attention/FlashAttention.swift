import AttentionKernelInterface
import Dispatch
import Foundation
import Synchronization

/// Block sizes of the flash kernel: queries per work item, keys per step.
struct FlashBlockSizes: Sendable, Equatable {
    /// Query rows per work item (one (batch, head, query block) triple).
    var queryBlock: Int
    /// Key rows per online-softmax step.
    var keyBlock: Int

    init(queryBlock: Int, keyBlock: Int) {
        self.queryBlock = max(1, queryBlock)
        self.keyBlock = max(1, keyBlock)
    }

    /// The choice for `queryCount` queries.
    ///
    /// Query blocks follow PyTorch's CPU flash kernel (256 rows from 768 queries up, 64 from
    /// 192, else 32) and key blocks are 512. Measured on 2 cores (H = 12, D = 64, N = 2048,
    /// OpenBLAS Haswell kernel), every query block in {64, 128, 256, 512} × key block in
    /// {128, 256, 512, 1024} landed within 66–75 GF/s per core, inside the machine's noise: the
    /// block sgemms (which top out near 95 GF/s here, packing included) and the SIMD softmax set
    /// the pace, not the blocking. Larger query blocks amortise the packing of each key block
    /// over more rows; 256 × 512 keeps the score block (512 KiB) inside a 1 MiB L2.
    static func automatic(queryCount: Int) -> FlashBlockSizes {
        let queryBlock = queryCount >= 768 ? 256 : queryCount >= 192 ? 64 : 32
        return FlashBlockSizes(queryBlock: queryBlock, keyBlock: 512)
    }
}

/// How the flash kernel splits the keys of one (batch row, head) across workers.
public enum KeySplit: Sendable, Hashable {
    /// Split only when a few queries (decoding) would leave one worker per processor idle. The
    /// split is sized for one worker per active processor whatever the call's worker count, so
    /// that it, and with it every bit of the result, is the same for every worker count.
    case automatic
    /// Never split: one work item per (batch row, head, query block).
    case never
    /// Split every (batch row, head) into this many key chunks (clamped to the key count).
    case chunks(Int)
}

/// The blocked online-softmax ("flash") kernel: same math as `ReferenceAttention`, O(N) extra
/// memory.
///
/// Work items are (batch row, key/value head, query block); workers take them from a shared
/// counter, heaviest first. Each key block serves every query head of the item's GQA group while
/// it is hot in cache, so grouped heads read their keys and values once. For one head of an
/// item, with `Q` its `[bq, D]` query rows and `O` an accumulator, in
/// base 2 (scores pre-multiplied by log₂e, so the exponential needs no range-reduction multiply):
///
///     for each key block K_j, V_j (sinks first, then tokens; blocks nobody may see are skipped)
///         S = scale·log₂e · Q · K_jᵀ                              (sgemm, read in place)
///         S += log₂e · mask;  S = −∞ where the causal or window rule hides a key
///         m' = max(m, rowmax S);  P = 2^(S − m');  l' = l·2^(m − m') + rowsum P
///         O = O·2^(m − m') + dropout(P) · V_j                     (sgemm, beta = 1)
///     context = O / l   (rows with l = 0 saw nothing: zeros)
///
/// The path is chosen once per item: an item with one query row (decoding) computes the scores
/// of every head of its group in one register-blocked pass over each key block (`DotProducts`)
/// and `O += P·V` as one `sgemv` per head; an item with more rows takes the two sgemms above.
///
/// Split-KV (decoding): with few queries, an item may cover one chunk of the keys instead; it
/// leaves its partial `(m, l, O)` and a merge combines the chunks of a row:
/// `M = max_c m_c`, `L = Σ_c l_c·2^(m_c − M)`, `context = Σ_c O_c·2^(m_c − M) / L`.
///
/// Scratch per worker: `S` `[bq, bk]`, and `O` `[bq, D]`, `m`, `l` per head of a group:
/// O(workers · bq · (bk + group · D)),
/// independent of the sequence length. The block sgemms run with one OpenBLAS thread
/// (``AttentionProblem/run(_:)`` holds OpenBLAS there).
/// Every item is computed the same way whichever worker takes it, so results are bitwise
/// identical for any worker count.
enum FlashAttention {
    /// Called through ``AttentionProblem/run(_:)``; reads `options.workers`, `keySplit` and
    /// `blockSizes`.
    static func run(_ problem: AttentionProblem, options: KernelOptions) {
        let n = problem.queryCount
        guard n > 0, problem.batch > 0 else { return }
        let keyCounts = problem.segments.map { $0.reduce(0) { $0 + $1.rowCount } }
        let maxKeys = keyCounts.max() ?? 0
        let blocks = options.blockSizes ?? .automatic(queryCount: n)
        let queryBlock = min(blocks.queryBlock, n)
        // Round the key block up to whole SIMD vectors; padded columns hold −∞.
        let keyBlock = roundUp(min(blocks.keyBlock, max(maxKeys, 1)), to: SoftmaxStep.vectorWidth)
        let queryBlocks = (n + queryBlock - 1) / queryBlock
        let requestedWorkers = max(1, options.workers ?? defaultWorkerCount)
        let group = problem.groupSize
        let chunks: Int
        switch options.keySplit {
        case .never: chunks = 1
        case .chunks(let count): chunks = max(1, min(count, maxKeys))
        case .automatic:
            // Sized for the processors, not `requestedWorkers`: the chunks decide the summation
            // order, and results must not depend on the worker count.
            chunks = automaticKeyChunks(queryCount: n, keyCount: maxKeys,
                                        rowsAndHeads: problem.batch * problem.numKVHeads,
                                        queryBlocks: queryBlocks, workers: defaultWorkerCount)
        }
        let itemCount = problem.batch * problem.numKVHeads * queryBlocks * chunks
        let workerCount = min(requestedWorkers, itemCount)
        let d = problem.headDim, ldq = problem.queryRowStride

        // Split-KV partials: per item and head of its group, m and l per row and O per row.
        let partialStride = queryBlock * (d + 2)
        let partials = chunks > 1 ? PartialResults(capacity: itemCount * group * partialStride) : nil
        defer { partials?.base.deallocate() }

        let next = Atomic<Int>(0)
        let body = { @Sendable (worker: Int) in
            var scratch = Scratch(queryBlock: queryBlock, keyBlock: keyBlock, headDim: d, heads: group)
            defer { scratch.deallocate() }
            while true {
                let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard item < itemCount else { return }
                // Heaviest first: under the causal rule late query blocks see the most keys.
                let chunk = item % chunks
                let block = queryBlocks - 1 - (item / chunks) % queryBlocks
                let kvHead = (item / (chunks * queryBlocks)) % problem.numKVHeads
                let batch = item / (chunks * queryBlocks * problem.numKVHeads)
                let first = block * queryBlock
                let end = min(first + queryBlock, problem.queryCounts[batch])
                guard first < end else { continue }  // padding rows only
                let keys = keyCounts[batch]
                let keyRange = (keys * chunk / chunks)..<(keys * (chunk + 1) / chunks)
                attend(problem, batch: batch, kvHead: kvHead, queries: first..<end, keys: keyRange,
                       scratch: &scratch)
                for member in 0..<group {
                    if let partials {
                        scratch.store(member, rows: end - first,
                                      into: partials.base + (item * group + member) * partialStride)
                    } else {
                        let head = kvHead * group + member
                        scratch.normalize(member, rows: end - first,
                                          into: problem.context + (batch * n + first) * ldq + head * d, stride: ldq)
                        if let logSumExp = problem.logSumExp {
                            scratch.storeLogSumExp(member, rows: end - first,
                                                   into: logSumExp + (batch * problem.nHeads + head) * n + first)
                        }
                    }
                }
            }
        }
        WorkerPool.run(count: workerCount, body)

        if let partials {
            merge(problem, partials: partials.base, partialStride: partialStride, chunks: chunks,
                  queryBlock: queryBlock, queryBlocks: queryBlocks)
        }
        zeroPaddingRows(problem)
    }

    /// Key chunks per (batch row, key/value head) when the caller leaves it to the kernel: split only for
    /// at most 16 queries (decoding) when there are fewer than 4 work items per worker, into
    /// chunks of at least 512 keys, enough to give every worker 4 items.
    static func automaticKeyChunks(
        queryCount: Int, keyCount: Int, rowsAndHeads: Int, queryBlocks: Int, workers: Int
    ) -> Int {
        let items = rowsAndHeads * queryBlocks
        guard queryCount <= 16, items < 4 * workers else { return 1 }
        let wanted = (4 * workers + items - 1) / items
        return max(1, min(wanted, keyCount / 512))
    }

    /// Split-KV partial results, written by workers at disjoint item offsets.
    struct PartialResults: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>
        init(capacity: Int) { base = .allocate(capacity: capacity) }
    }

    /// Workers used when the caller does not say: one per active processor.
    static var defaultWorkerCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Per-worker buffers, allocated once per `run` and reused by every item the worker takes.
    /// An item covers the `heads` query heads of one key/value group, each with its own
    /// accumulator and row statistics; the score block is shared, one head at a time.
    struct Scratch {
        let keyBlock: Int
        let queryBlock: Int
        let headDim: Int
        let scores: UnsafeMutablePointer<Float>       // [max(queryBlock, heads), keyBlock]
        let accumulators: UnsafeMutablePointer<Float> // [heads, queryBlock, headDim]
        /// A single-query item's query rows of every head of the group, pre-scaled by
        /// `scale · log₂e`: `[heads, headDim]`.
        let scaledQueries: UnsafeMutablePointer<Float>
        let rowMaxima: UnsafeMutablePointer<Float>    // [heads, queryBlock], base 2
        let rowSums: UnsafeMutablePointer<Float>      // [heads, queryBlock]

        init(queryBlock: Int, keyBlock: Int, headDim: Int, heads: Int) {
            self.keyBlock = keyBlock
            self.queryBlock = queryBlock
            self.headDim = headDim
            scores = .allocate(capacity: max(queryBlock, heads) * keyBlock)
            accumulators = .allocate(capacity: heads * queryBlock * headDim)
            scaledQueries = .allocate(capacity: heads * headDim)
            rowMaxima = .allocate(capacity: heads * queryBlock)
            rowSums = .allocate(capacity: heads * queryBlock)
        }

        func deallocate() {
            scores.deallocate()
            accumulators.deallocate()
            scaledQueries.deallocate()
            rowMaxima.deallocate()
            rowSums.deallocate()
        }

        func accumulator(_ member: Int) -> UnsafeMutablePointer<Float> { accumulators + member * queryBlock * headDim }
        func rowMax(_ member: Int) -> UnsafeMutablePointer<Float> { rowMaxima + member * queryBlock }
        func rowSum(_ member: Int) -> UnsafeMutablePointer<Float> { rowSums + member * queryBlock }

        /// `context[i] = O[i] / l[i]` for group member `member`, or zeros for a row that saw nothing.
        func normalize(_ member: Int, rows: Int, into context: UnsafeMutablePointer<Float>, stride: Int) {
            let d = headDim, accumulator = accumulator(member), rowSum = rowSum(member)
            for i in 0..<rows {
                let sum = rowSum[i]
                if sum == 0 {
                    (context + i * stride).update(repeating: 0, count: d)  // saw nothing
                } else {
                    // A NaN sum (an overflow upstream) stays NaN.
                    Kernels.active.scale(accumulator + i * d, count: d, by: 1 / sum, into: context + i * stride)
                }
            }
        }

        /// `L = (m + log₂ l) · ln 2` per row (the scores are base 2), `+∞` for a row that saw nothing.
        func storeLogSumExp(_ member: Int, rows: Int, into logSumExp: UnsafeMutablePointer<Float>) {
            let rowMax = rowMax(member), rowSum = rowSum(member)
            for i in 0..<rows {
                logSumExp[i] = rowSum[i] == 0 ? .infinity : (rowMax[i] + log2(rowSum[i])) * FlashAttention.ln2
            }
        }

        /// Leaves `[m, l, O…]` per row of group member `member` for the split-KV merge.
        func store(_ member: Int, rows: Int, into partial: UnsafeMutablePointer<Float>) {
            let d = headDim, accumulator = accumulator(member)
            let rowMax = rowMax(member), rowSum = rowSum(member)
            for i in 0..<rows {
                let out = partial + i * (d + 2)
                out[0] = rowMax[i]
                out[1] = rowSum[i]
                (out + 2).update(from: accumulator + i * d, count: d)
            }
        }
    }

    /// Combines the key chunks of every (batch row, head, query block) into `context`.
    private static func merge(
        _ problem: AttentionProblem, partials: UnsafeMutablePointer<Float>, partialStride: Int, chunks: Int,
        queryBlock: Int, queryBlocks: Int
    ) {
        let d = problem.headDim, ldq = problem.queryRowStride, n = problem.queryCount
        let merged = UnsafeMutablePointer<Float>.allocate(capacity: d)
        defer { merged.deallocate() }
        for batch in 0..<problem.batch {
            for head in 0..<problem.nHeads {
                for block in 0..<queryBlocks {
                    let first = block * queryBlock
                    let rows = max(0, min(first + queryBlock, problem.queryCounts[batch]) - first)
                    let group = problem.groupSize, kvHead = head / group, member = head % group
                    let firstItem = ((batch * problem.numKVHeads + kvHead) * queryBlocks + (queryBlocks - 1 - block)) * chunks
                    for i in 0..<rows {
                        let parts = (0..<chunks).map {
                            partials + ((firstItem + $0) * group + member) * partialStride + i * (d + 2)
                        }
                        let maximum = parts.reduce(-Float.infinity) { $1[0].isNaN || $1[0] > $0 ? $1[0] : $0 }
                        let out = problem.context + (batch * n + first + i) * ldq + head * d
                        let logSumExp = problem.logSumExp.map { $0 + (batch * problem.nHeads + head) * n + first + i }
                        guard maximum != -.infinity else {
                            out.update(repeating: 0, count: d)  // no chunk saw a key
                            logSumExp?.pointee = .infinity
                            continue
                        }
                        merged.update(repeating: 0, count: d)
                        var sum: Float = 0
                        for part in parts where part[0] != -.infinity {
                            let weight = Kernels.active.exp2(part[0] - maximum)
                            sum += part[1] * weight
                            for e in 0..<d { merged[e] += part[2 + e] * weight }
                        }
                        Kernels.active.scale(merged, count: d, by: 1 / sum, into: out)
                        logSumExp?.pointee = (maximum + log2(sum)) * ln2
                    }
                }
            }
        }
    }

    /// Padding query rows (past `queryCounts[b]`) attend to nothing: zeros (log-sum-exp `+∞`).
    private static func zeroPaddingRows(_ problem: AttentionProblem) {
        let width = problem.queryRowStride, n = problem.queryCount
        for batch in 0..<problem.batch where problem.queryCounts[batch] < n {
            let padding = problem.queryCounts[batch]..<n
            let first = problem.context + (batch * n + padding.lowerBound) * width
            first.update(repeating: 0, count: padding.count * width)
            if let logSumExp = problem.logSumExp {
                for head in 0..<problem.nHeads {
                    (logSumExp + (batch * problem.nHeads + head) * n + padding.lowerBound)
                        .update(repeating: .infinity, count: padding.count)
                }
            }
        }
    }

    /// One work item: query rows `queries` of every head in key/value group `kvHead` of batch
    /// row `batch`, over the keys at indices `keys` of the row's segments taken in order. Each key
    /// block serves all heads of the group while it is hot in cache (GQA reads it once).
    /// Leaves each head's `O`, `m`, `l` in `scratch`.
    private static func attend(
        _ problem: AttentionProblem, batch: Int, kvHead: Int, queries: Range<Int>, keys keyRange: Range<Int>,
        scratch: inout Scratch
    ) {
        let d = problem.headDim, ldk = scratch.keyBlock
        let rows = queries.count, group = problem.groupSize
        let firstQueryPosition = problem.queryFirstPositions[batch] + queries.lowerBound
        let lastQueryPosition = firstQueryPosition + rows - 1
        // Token positions visible to the first and to the last row; rows in between lie between.
        let firstVisible = problem.visibleTokenPositions(forQueryAt: firstQueryPosition)
        let lastVisible = problem.visibleTokenPositions(forQueryAt: lastQueryPosition)

        for member in 0..<group {
            scratch.accumulator(member).update(repeating: 0, count: rows * d)
            scratch.rowMax(member).update(repeating: -.infinity, count: rows)
            scratch.rowSum(member).update(repeating: 0, count: rows)
        }
        // The item's path, chosen once: one query row (decoding) takes the whole group's scores
        // from one register-blocked pass over each key block (``DotProducts``) instead of one
        // BLAS call per head; a block of rows takes two sgemms per head and key block.
        let singleQuery = rows == 1
        if singleQuery {
            let ldq = problem.queryRowStride
            let groupQueries = problem.queries + (batch * problem.queryCount + queries.lowerBound) * ldq
                + kvHead * group * d
            Kernels.active.scale(groupQueries, count: group * d, by: problem.scale * log2e, into: scratch.scaledQueries)
        }

        var segmentOffset = 0  // index of the segment's first key in the row's key order
        for segment in problem.segments[batch] {
            defer { segmentOffset += segment.rowCount }
            let ruled = !segment.isSink
            var start = max(0, keyRange.lowerBound - segmentOffset)
            let end = min(segment.rowCount, keyRange.upperBound - segmentOffset)
            while start < end {
                let blockPosition = segment.firstPosition + start
                var count = min(ldk, end - start)
                var firstRow = 0, endRow = rows
                if ruled {
                    // Keys only move right within a segment: past the last row's reach, stop.
                    if blockPosition > lastVisible.upperBound { break }
                    // Before the first row's window: skip ahead to where it opens.
                    if blockPosition < firstVisible.lowerBound {
                        start = min(end, start + (firstVisible.lowerBound - blockPosition))
                        continue
                    }
                    // Rows above the block's first key see none of it under the causal rule;
                    // rows whose window opens past the block's end see none of it either.
                    firstRow = problem.isCausal ? max(0, blockPosition - firstQueryPosition) : 0
                    if problem.isCausal {
                        // Past the block's last query nothing is visible; across the diagonal,
                        // step in narrow blocks so the hidden triangle above it is skipped.
                        count = min(count, lastQueryPosition - blockPosition + 1,
                                    max(firstQueryPosition - blockPosition, diagonalStep))
                    }
                    if let window = problem.window {
                        endRow = min(rows, blockPosition + count - 1 + window - firstQueryPosition)
                    }
                }
                defer { start += count }
                guard firstRow < endRow else { continue }
                let block = KeyBlock(
                    segment: segment, start: start, count: count, position: blockPosition, ruled: ruled,
                    keys: segment.keys + start * segment.rowStride + segment.headOffset(kvHead, headDim: d),
                    values: segment.values + start * segment.rowStride + segment.headOffset(kvHead, headDim: d),
                    rows: firstRow..<endRow)
                if singleQuery {
                    accumulateSingleQuery(problem, block: block, batch: batch, kvHead: kvHead,
                                          query: queries.lowerBound, scratch: scratch)
                } else {
                    for member in 0..<group {
                        accumulate(problem, block: block, batch: batch, head: kvHead * group + member,
                                   queries: queries, member: member, scratch: scratch)
                    }
                }
            }
        }
    }

    /// A run of keys and values, and the query rows of the item that may see some of it.
    private struct KeyBlock {
        var segment: KeyValueSegment
        var start: Int
        var count: Int
        /// Position of the block's first key.
        var position: Int
        /// Whether the causal and window rules apply (not to sinks).
        var ruled: Bool
        var keys: UnsafePointer<Float>
        var values: UnsafePointer<Float>
        var rows: Range<Int>
    }

    /// One online-softmax step of one head over one key block, for the block's active rows:
    /// `S = Q·Kᵀ` and `O += P·V` as sgemms.
    @inline(__always)
    private static func accumulate(
        _ problem: AttentionProblem, block: KeyBlock, batch: Int, head: Int, queries: Range<Int>,
        member: Int, scratch: Scratch
    ) {
        let d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let count = block.count, firstRow = block.rows.lowerBound, activeRows = block.rows.count
        let scores = scratch.scores, accumulator = scratch.accumulator(member)
        let rowMax = scratch.rowMax(member), rowSum = scratch.rowSum(member)
        let q = problem.queries + (batch * problem.queryCount + queries.lowerBound) * ldq + head * d
        let rowStride = block.segment.rowStride

        BLAS.gemm(transposeB: true, m: activeRows, n: count, k: d, alpha: problem.scale * log2e,
                  a: q + firstRow * ldq, lda: ldq, b: block.keys, ldb: rowStride,
                  c: scores + firstRow * ldk, ldc: ldk)

        for i in block.rows {
            softmaxStep(problem, block: block, batch: batch, head: head, query: queries.lowerBound + i,
                        row: scores + i * ldk, rowMax: rowMax + i, rowSum: rowSum + i,
                        accumulator: accumulator + i * d)
        }

        BLAS.gemm(m: activeRows, n: d, k: count, a: scores + firstRow * ldk, lda: ldk,
                  b: block.values, ldb: rowStride, beta: 1,
                  c: accumulator + firstRow * d, ldc: d)
    }

    /// One group's step over one key block for an item with a single query row: the scores of
    /// every head of the group at once (``DotProducts``), then each head's softmax step and
    /// `o += Vᵀ·p`.
    @inline(__always)
    private static func accumulateSingleQuery(
        _ problem: AttentionProblem, block: KeyBlock, batch: Int, kvHead: Int, query: Int, scratch: Scratch
    ) {
        let d = problem.headDim, ldk = scratch.keyBlock, group = problem.groupSize
        let rowStride = block.segment.rowStride
        Kernels.active.dotProducts(queries: scratch.scaledQueries, members: group, headDim: d,
                                   keys: block.keys, keyStride: rowStride, count: block.count,
                                   into: scratch.scores, scoreStride: ldk)
        for member in 0..<group {
            let row = scratch.scores + member * ldk
            softmaxStep(problem, block: block, batch: batch, head: kvHead * group + member, query: query,
                        row: row, rowMax: scratch.rowMax(member), rowSum: scratch.rowSum(member),
                        accumulator: scratch.accumulator(member))
            BLAS.gemv(transposeA: true, m: block.count, n: d, a: block.values, lda: rowStride,
                      x: row, beta: 1, y: scratch.accumulator(member))
        }
    }

    /// The online-softmax step of one query row over one key block, whose base-2 scores are in
    /// `row[0..<block.count]`: adds the mask, hides what the causal and window rules hide,
    /// rescales the row's `O` and `l` to the new maximum, and leaves `P` in `row`.
    @inline(__always)
    private static func softmaxStep(
        _ problem: AttentionProblem, block: KeyBlock, batch: Int, head: Int, query: Int,
        row: UnsafeMutablePointer<Float>, rowMax: UnsafeMutablePointer<Float>,
        rowSum: UnsafeMutablePointer<Float>, accumulator: UnsafeMutablePointer<Float>
    ) {
        let count = block.count
        let queryPosition = problem.queryFirstPositions[batch] + query
        var maskRow: UnsafePointer<Float>?
        if let mask = problem.mask, let firstColumn = block.segment.firstMaskColumn {
            maskRow = mask.row(batch: batch, head: head, query: query) + firstColumn + block.start
        }
        // Columns [visibleStart, visibleEnd) pass the causal and window rules.
        var visibleStart = 0, visibleEnd = count
        if block.ruled {
            let visible = problem.visibleTokenPositions(forQueryAt: queryPosition)
            visibleStart = max(0, min(count, visible.lowerBound - block.position))
            visibleEnd = max(visibleStart, min(count, visible.upperBound - block.position + 1))
        }
        let dropout = problem.dropout.map { dropout in
            DropoutRow(rowKey: dropout.rowKey(batch: batch, head: head, queryPosition: queryPosition),
                       threshold: dropout.threshold, keepScale: dropout.keepScale,
                       firstKeyPosition: block.position)
        }
        Kernels.active.softmaxStep(SoftmaxStep(
            row: row, count: count, paddedCount: roundUp(count, to: SoftmaxStep.vectorWidth),
            visible: visibleStart..<visibleEnd, mask: maskRow, rowMax: rowMax, rowSum: rowSum,
            accumulator: accumulator, headDim: problem.headDim, dropout: dropout))
    }

    /// Key-block width while crossing the causal diagonal.
    static let diagonalStep = 128

    /// Scores are kept in base 2: `e^s = 2^(s·log₂e)`.
    static let log2e: Float = 1.442_695_04
    static let ln2: Float = 0.693_147_18

    @inline(__always)
    static func roundUp(_ value: Int, to multiple: Int) -> Int {
        (value + multiple - 1) / multiple * multiple
    }
}
