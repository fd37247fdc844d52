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

    /// The choice for `queryCount` queries over `keyCount` keys.
    ///
    /// Query blocks follow PyTorch's CPU flash kernel (256 rows from 768 queries up, 64 from
    /// 192, else 32) and key blocks are 512. Measured on 2 cores (H = 12, D = 64, N = 2048,
    /// OpenBLAS Haswell kernel), every query block in {64, 128, 256, 512} × key block in
    /// {128, 256, 512, 1024} landed within 66–75 GF/s per core, inside the machine's noise: the
    /// block sgemms (which top out near 95 GF/s here, packing included) and the SIMD softmax set
    /// the pace, not the blocking. Larger query blocks amortise the packing of each key block
    /// over more rows; 256 × 512 keeps the score block (512 KiB) inside a 1 MiB L2.
    static func automatic(queryCount: Int, keyCount: Int) -> FlashBlockSizes {
        let queryBlock = queryCount >= 768 ? 256 : queryCount >= 192 ? 64 : 32
        return FlashBlockSizes(queryBlock: queryBlock, keyBlock: 512)
    }
}

/// The blocked online-softmax ("flash") kernel: same math as `ReferenceAttention`, O(N) extra
/// memory.
///
/// Work items are (batch row, head, query block); workers take them from a shared counter,
/// heaviest first. For one item, with `Q` its `[bq, D]` query rows and `O` an accumulator:
///
///     for each key block K_j, V_j (sinks first, then tokens; causal: stop above the diagonal)
///         S = scale · Q · K_jᵀ                                   (sgemm, read in place)
///         S += mask;  S = −∞ where the causal rule hides a key
///         m' = max(m, rowmax S);  P = e^(S − m');  l' = l·e^(m − m') + rowsum P
///         O = O·e^(m − m') + dropout(P) · V_j                    (sgemm, beta = 1)
///     context = O / l   (rows with l = 0 saw nothing: zeros)
///
/// Scratch per worker: `S` `[bq, bk]`, `O` `[bq, D]`, `m`, `l`: O(workers · bq · bk),
/// independent of the sequence length. The block sgemms run with one OpenBLAS thread.
/// Every item is computed the same way whichever worker takes it, so results are bitwise
/// identical for any worker count.
enum FlashAttention {
    static func run(_ problem: AttentionProblem, blockSizes: FlashBlockSizes? = nil, workers: Int? = nil) {
        let n = problem.queryCount
        guard n > 0, problem.batch > 0 else { return }
        let maxKeys = problem.segments.map { $0.reduce(0) { $0 + $1.rowCount } }.max() ?? 0
        let blocks = blockSizes ?? .automatic(queryCount: n, keyCount: maxKeys)
        let queryBlock = min(blocks.queryBlock, n)
        // Round the key block up to whole SIMD vectors; padded columns hold −∞.
        let keyBlock = roundUp(min(blocks.keyBlock, max(maxKeys, 1)), to: VectorMath.width)
        let queryBlocks = (n + queryBlock - 1) / queryBlock
        let itemCount = problem.batch * problem.nHeads * queryBlocks
        let workerCount = max(1, min(workers ?? defaultWorkerCount, itemCount))

        BLAS.withSingleThreadedCalls {
            let next = Atomic<Int>(0)
            let body = { @Sendable (worker: Int) in
                var scratch = Scratch(queryBlock: queryBlock, keyBlock: keyBlock, headDim: problem.headDim)
                defer { scratch.deallocate() }
                while true {
                    let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
                    guard item < itemCount else { return }
                    // Heaviest first: under the causal rule late query blocks see the most keys.
                    let block = queryBlocks - 1 - item % queryBlocks
                    let head = (item / queryBlocks) % problem.nHeads
                    let batch = item / (queryBlocks * problem.nHeads)
                    let first = block * queryBlock
                    attend(problem, batch: batch, head: head, queries: first..<min(first + queryBlock, n),
                           scratch: &scratch)
                }
            }
            if workerCount == 1 {
                body(0)
            } else {
                DispatchQueue.concurrentPerform(iterations: workerCount, execute: body)
            }
        }
    }

    /// Workers used when the caller does not say: one per active processor.
    static var defaultWorkerCount: Int { ProcessInfo.processInfo.activeProcessorCount }

    /// Per-worker buffers, allocated once per `run` and reused by every item the worker takes.
    struct Scratch {
        let keyBlock: Int
        let scores: UnsafeMutablePointer<Float>       // [queryBlock, keyBlock]
        let accumulator: UnsafeMutablePointer<Float>  // [queryBlock, headDim]
        let rowMax: UnsafeMutablePointer<Float>       // [queryBlock]
        let rowSum: UnsafeMutablePointer<Float>       // [queryBlock]

        init(queryBlock: Int, keyBlock: Int, headDim: Int) {
            self.keyBlock = keyBlock
            scores = .allocate(capacity: queryBlock * keyBlock)
            accumulator = .allocate(capacity: queryBlock * headDim)
            rowMax = .allocate(capacity: queryBlock)
            rowSum = .allocate(capacity: queryBlock)
        }

        func deallocate() {
            scores.deallocate()
            accumulator.deallocate()
            rowMax.deallocate()
            rowSum.deallocate()
        }
    }

    /// One work item: query rows `queries` of head `head` in batch row `batch`.
    private static func attend(
        _ problem: AttentionProblem, batch: Int, head: Int, queries: Range<Int>, scratch: inout Scratch
    ) {
        let d = problem.headDim, ldq = problem.queryRowStride, ldk = scratch.keyBlock
        let rows = queries.count
        let kvHead = head / problem.groupSize
        let q = problem.queries + (batch * problem.queryCount + queries.lowerBound) * ldq + head * d
        let firstQueryPosition = problem.queryFirstPosition + queries.lowerBound
        let lastQueryPosition = firstQueryPosition + rows - 1
        let scores = scratch.scores, accumulator = scratch.accumulator
        let rowMax = scratch.rowMax, rowSum = scratch.rowSum

        accumulator.update(repeating: 0, count: rows * d)
        rowMax.update(repeating: -.infinity, count: rows)
        rowSum.update(repeating: 0, count: rows)

        for segment in problem.segments[batch] {
            let causal = problem.isCausal && !segment.isSink
            var start = 0
            while start < segment.rowCount {
                let blockPosition = segment.firstPosition + start
                // Keys of a causal segment only move further right: the rest is hidden.
                if causal && blockPosition > lastQueryPosition { break }
                var count = min(ldk, segment.rowCount - start)
                // Rows above the first key of the block see none of it under the causal rule.
                var firstRow = 0
                if causal {
                    firstRow = max(0, blockPosition - firstQueryPosition)
                    // Past the block's last query nothing is visible; across the diagonal, step in
                    // narrow blocks so the hidden triangle above it is skipped, not computed.
                    count = min(count, lastQueryPosition - blockPosition + 1,
                                max(firstQueryPosition - blockPosition, diagonalStep))
                }
                let activeRows = rows - firstRow
                let padded = roundUp(count, to: VectorMath.width)
                let keys = segment.keys + start * segment.rowStride + kvHead * d
                let values = segment.values + start * segment.rowStride + kvHead * d

                BLAS.gemm(transposeB: true, m: activeRows, n: count, k: d, alpha: problem.scale * log2e,
                          a: q + firstRow * ldq, lda: ldq, b: keys, ldb: segment.rowStride,
                          c: scores + firstRow * ldk, ldc: ldk)

                let needsCausal = causal && blockPosition + count - 1 > firstQueryPosition
                for i in firstRow..<rows {
                    let row = scores + i * ldk
                    let queryPosition = firstQueryPosition + i
                    if let mask = problem.mask, let firstColumn = segment.firstMaskColumn {
                        let maskRow = mask.row(batch: batch, head: head, query: queries.lowerBound + i)
                            + firstColumn + start
                        for j in 0..<count { row[j] += maskRow[j] * log2e }
                    }
                    // Visible keys are j <= queryPosition − blockPosition; the rest become −∞.
                    let visible = needsCausal ? max(0, min(count, queryPosition - blockPosition + 1)) : count
                    (row + visible).update(repeating: -.infinity, count: padded - visible)

                    let blockMax = VectorMath.maximum(row, count: padded)
                    let previousMax = rowMax[i]
                    let newMax = max(previousMax, blockMax)
                    if newMax == -.infinity {
                        // Nothing visible yet: P row is zero, O and l stay zero.
                        row.update(repeating: 0, count: count)
                        continue
                    }
                    let blockSum = VectorMath.exponentiateAndSum(row, count: padded, shift: newMax)
                    if previousMax == -.infinity {
                        rowSum[i] = blockSum
                    } else if previousMax != newMax {
                        let correction = VectorMath.exp2(VectorMath.Vector(repeating: previousMax - newMax))[0]
                        rowSum[i] = rowSum[i] * correction + blockSum
                        VectorMath.scale(accumulator + i * d, count: d, by: correction, into: accumulator + i * d)
                    } else {
                        rowSum[i] += blockSum
                    }
                    rowMax[i] = newMax
                    if let dropout = problem.dropout {
                        let rowKey = dropout.rowKey(batch: batch, head: head, queryPosition: queryPosition)
                        for j in 0..<count {
                            row[j] *= dropout.factor(rowKey: rowKey, keyPosition: blockPosition + j)
                        }
                    }
                }

                BLAS.gemm(m: activeRows, n: d, k: count, a: scores + firstRow * ldk, lda: ldk,
                          b: values, ldb: segment.rowStride, beta: 1,
                          c: accumulator + firstRow * d, ldc: d)
                start += count
            }
        }

        let context = problem.context + (batch * problem.queryCount + queries.lowerBound) * ldq + head * d
        for i in 0..<rows {
            let out = context + i * ldq
            let sum = rowSum[i]
            if sum > 0 {
                VectorMath.scale(accumulator + i * d, count: d, by: 1 / sum, into: out)
            } else {
                out.update(repeating: 0, count: d)
            }
        }
    }

    /// Key-block width while crossing the causal diagonal.
    static let diagonalStep = 128

    /// Scores are kept in base 2: `e^s = 2^(s·log₂e)`.
    static let log2e: Float = 1.442_695_04

    @inline(__always)
    static func roundUp(_ value: Int, to multiple: Int) -> Int {
        (value + multiple - 1) / multiple * multiple
    }
}
