/// Linear projections without bias: `y = x · Wᵀ` for one or more weights sharing the input.
///
/// Every product runs on the layer's own workers (``WorkerPool``), each calling OpenBLAS with
/// one thread; OpenBLAS's pool is never used. Its threads spin for about 2²⁸ cycles (70 ms at
/// 3.7 GHz, `OPENBLAS_THREAD_TIMEOUT`) after each multi-threaded call, on the very cores the
/// attention kernel's workers need next: with multi-threaded projections, a 2-thread layer
/// forward ran only 1.1–1.6× faster than a 1-thread one.
///
/// - Prompt-sized inputs (more than ``gemvRowLimit`` rows) are cut into blocks of
///   ``rowBlock`` rows per weight, each one single-threaded `sgemm`.
/// - Decoding-sized inputs are weight-bandwidth-bound matrix–vector products: the output
///   features of every weight are cut into slices of whole granules, each streamed through a
///   one-thread `sgemv`.
///
/// A piece is computed the same way whichever worker takes it, and the row blocks depend on the
/// shapes alone; the decoding slices follow the worker count but leave every output row's
/// `sgemv` unchanged (``OutputSlices``). Results are bitwise identical for every worker count
/// and every ``BLAS/threadCount``.
enum Projections {
    /// Up to this many rows, projections run as matrix–vector products.
    static let gemvRowLimit = 4

    /// Rows of one prompt-sized `sgemm` piece. At 128 rows a one-thread `sgemm` of a 768-wide
    /// weight runs as fast as one call over 1,024 rows (75–80 GF/s on Zen 2, where 32-row
    /// pieces lose a quarter to re-packing the weight), and a 1,024-token prompt still gives
    /// 24 pieces to share out for q, k and v.
    static let rowBlock = 128

    /// Output features per decoding slice are a multiple of this (whole cache lines of `y`).
    static let sliceGranule = 16

    /// Below this many weight elements in all, one thread streams them faster than a hand-off.
    static let parallelThreshold = 1 << 16

    /// `input · weights[i]ᵀ` for each weight `[outputsᵢ, inputs]`, `input` being `[rows, inputs]`;
    /// one aligned `[rows, outputsᵢ]` buffer per weight.
    static func apply(_ input: [Float], rows: Int, weights: [Tensor], workers: Int) -> [AlignedBuffer] {
        input.withUnsafeBufferPointer { input in
            apply(input.baseAddress!, rows: rows, weights: weights, workers: workers)
        }
    }

    private static func apply(
        _ input: UnsafePointer<Float>, rows: Int, weights: [Tensor], workers: Int
    ) -> [AlignedBuffer] {
        // Every element is written below: rows > 0 and inputs > 0 (dModel), or count 0.
        var results = weights.map { AlignedBuffer(overwrittenCount: rows * $0.shape[0]) }
        let outputs = results.indices.map { results[$0].mutablePointer }
        withExtendedLifetime(results) {
            apply(input, rows: rows, weights: weights, into: outputs, workers: workers)
        }
        return results
    }

    /// `outputs[i] = input · weights[i]ᵀ`: `input` `[rows, inputs]`, each weight `[outputsᵢ, inputs]`,
    /// each output `[rows, outputsᵢ]` (fully overwritten), on up to `workers` workers.
    static func apply(
        _ input: UnsafePointer<Float>, rows: Int, weights: [Tensor], into outputs: [UnsafeMutablePointer<Float>],
        workers: Int
    ) {
        let inputs = weights.first?.shape[1] ?? 0
        guard rows > 0, inputs > 0 else { return }
        withUnsafePointers(to: weights.map(\.scalars)) { pointers in
            let operands = zip(pointers, weights).map { ($0, $1.shape[0]) }
            let pieces: any ProjectionPieces = rows > gemvRowLimit
                ? RowBlocks(input: input, weights: operands, outputs: outputs, rows: rows, inputs: inputs)
                : OutputSlices(input: input, weights: operands, outputs: outputs, rows: rows, inputs: inputs,
                               workers: workers)
            BLAS.withSingleThreadedCalls {
                WorkerPool.forEach(pieces.count, workers: workers) { pieces.run(piece: $0) }
            }
        }
    }
}

/// One projection call cut into independent pieces that write disjoint parts of the outputs;
/// the pointers are shared read-only by the workers.
private protocol ProjectionPieces: Sendable {
    var count: Int { get }
    func run(piece: Int)
}

/// Prompt-sized pieces: ``Projections/rowBlock`` rows of one weight's output per `sgemm`.
private struct RowBlocks: ProjectionPieces, @unchecked Sendable {
    let input: UnsafePointer<Float>
    let weights: [(pointer: UnsafePointer<Float>, outputs: Int)]
    let outputs: [UnsafeMutablePointer<Float>]
    let rows: Int, inputs: Int

    private var blocksPerWeight: Int { (rows + Projections.rowBlock - 1) / Projections.rowBlock }

    var count: Int { weights.count * blocksPerWeight }

    func run(piece: Int) {
        let weight = weights[piece / blocksPerWeight]
        let first = piece % blocksPerWeight * Projections.rowBlock
        let rowCount = min(Projections.rowBlock, rows - first)
        BLAS.gemm(transposeB: true, m: rowCount, n: weight.outputs, k: inputs,
                  a: input + first * inputs, lda: inputs, b: weight.pointer, ldb: inputs,
                  c: outputs[piece / blocksPerWeight] + first * weight.outputs, ldc: weight.outputs)
    }
}

/// Decoding-sized pieces: contiguous runs of output granules across all weights, one `sgemv`
/// per row and weight touched.
private struct OutputSlices: ProjectionPieces, @unchecked Sendable {
    let input: UnsafePointer<Float>
    let weights: [(pointer: UnsafePointer<Float>, outputs: Int)]
    let outputs: [UnsafeMutablePointer<Float>]
    let rows: Int, inputs: Int
    let count: Int

    init(input: UnsafePointer<Float>, weights: [(pointer: UnsafePointer<Float>, outputs: Int)],
         outputs: [UnsafeMutablePointer<Float>], rows: Int, inputs: Int, workers: Int) {
        self.input = input
        self.weights = weights
        self.outputs = outputs
        self.rows = rows
        self.inputs = inputs
        let totalOutputs = weights.reduce(0) { $0 + $1.outputs }
        count = totalOutputs * inputs < Projections.parallelThreshold ? 1
            : max(1, min(workers, totalOutputs / Projections.sliceGranule))
    }

    /// Each weight's outputs are cut into granules of ``Projections/sliceGranule`` from its first
    /// row, and slice `piece` takes a contiguous run of the granules of all weights. The slice
    /// count follows the workers here, but every output row sits at the same offset modulo 16
    /// of its `sgemv` call whatever the count, and OpenBLAS's `sgemv` computes each row of `y`
    /// as one dot product over the whole of `x` in a fixed order: results are bitwise equal.
    func run(piece: Int) {
        let granule = Projections.sliceGranule
        let granuleCounts = weights.map { ($0.outputs + granule - 1) / granule }
        let totalGranules = granuleCounts.reduce(0, +)
        let first = totalGranules * piece / count, end = totalGranules * (piece + 1) / count
        var granuleStart = 0
        for ((weight, granules), output) in zip(zip(weights, granuleCounts), outputs) {
            defer { granuleStart += granules }
            let lower = (max(first, granuleStart) - granuleStart) * granule
            let upper = min((min(end, granuleStart + granules) - granuleStart) * granule, weight.outputs)
            guard lower < upper else { continue }
            for r in 0..<rows {
                BLAS.gemv(m: upper - lower, n: inputs, a: weight.pointer + lower * inputs, lda: inputs,
                          x: input + r * inputs, y: output + r * weight.outputs + lower)
            }
        }
    }
}

/// `c = Σₜ op(aₜ) · bₜ` (plus `c` when `accumulates`), `c` being `[m, n]` with row stride `ldc`:
/// the products a backward pass chains into one output (`dx = dQ·Wq + dK·Wk + dV·Wv`), or one
/// product alone (`dW = dYᵀ · x`).
struct ProductChain: @unchecked Sendable {
    /// One term: `op(a)` is `[m, k]`, `a` itself `[k, m]` when `transposeA`; `b` is `[k, n]`.
    struct Term {
        var a: UnsafePointer<Float>, lda: Int, transposeA: Bool
        var b: UnsafePointer<Float>, ldb: Int
        var k: Int
    }
    var terms: [Term]
    var m: Int, n: Int
    var c: UnsafeMutablePointer<Float>, ldc: Int
    var accumulates: Bool

    /// Rows `rows` of `c`, one one-thread `sgemm` per term, in order.
    func run(rows: Range<Int>) {
        var overwrites = !accumulates
        for term in terms where term.k > 0 {
            let a = term.transposeA ? term.a + rows.lowerBound : term.a + rows.lowerBound * term.lda
            BLAS.gemm(transposeA: term.transposeA, m: rows.count, n: n, k: term.k, a: a, lda: term.lda,
                      b: term.b, ldb: term.ldb, beta: overwrites ? 0 : 1, c: c + rows.lowerBound * ldc, ldc: ldc)
            overwrites = false
        }
        if overwrites {
            for r in rows { (c + r * ldc).update(repeating: 0, count: n) }
        }
    }
}

extension Projections {
    /// Every chain's rows cut into blocks of ``rowBlock``, each block one work item on up to
    /// `workers` workers (one-thread `sgemm`s). The blocks follow the shapes alone and each
    /// block's terms run in order, so results are bitwise identical for every worker count.
    static func multiply(_ chains: [ProductChain], workers: Int) {
        let blocks = chains.map { ($0.m + rowBlock - 1) / rowBlock }
        let pieces = chains.indices.flatMap { chain in (0..<blocks[chain]).map { (chain, $0) } }
        BLAS.withSingleThreadedCalls {
            WorkerPool.forEach(pieces.count, workers: workers) { piece in
                let (index, block) = pieces[piece]
                let chain = chains[index]
                chain.run(rows: (block * rowBlock)..<min(chain.m, (block + 1) * rowBlock))
            }
        }
    }
}
