/// Linear projections without bias: `y = x · Wᵀ` for one or more weights sharing the input.
///
/// Prompt-sized inputs go to one multi-threaded OpenBLAS `sgemm` per weight. Decoding-sized
/// inputs (a few rows) are weight-bandwidth-bound matrix–vector products: every output row of
/// every weight is split across the kernel's ``WorkerPool`` workers, each streaming its slice of
/// the weights through a one-thread `sgemv`. Keeping OpenBLAS single-threaded here matters
/// beyond the projection itself: after a multi-threaded call OpenBLAS's pool threads spin for
/// about 2²⁸ cycles (70 ms at 3.7 GHz, `OPENBLAS_THREAD_TIMEOUT`), and during a decoding loop
/// they would spin on the very cores the attention kernel's workers need.
enum Projections {
    /// Up to this many rows, projections run as matrix–vector products.
    static let gemvRowLimit = 4

    /// Output features per worker slice are a multiple of this (whole cache lines of `y`).
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
        var results = weights.map { AlignedBuffer(zeros: rows * $0.shape[0]) }
        let outputs = results.indices.map { results[$0].mutablePointer }
        withExtendedLifetime(results) {
            apply(input, rows: rows, weights: weights, into: outputs, workers: workers)
        }
        return results
    }

    /// `outputs[i] = input · weights[i]ᵀ`: `input` `[rows, inputs]`, each weight `[outputsᵢ, inputs]`,
    /// each output `[rows, outputsᵢ]` (fully overwritten).
    static func apply(
        _ input: UnsafePointer<Float>, rows: Int, weights: [Tensor], into outputs: [UnsafeMutablePointer<Float>],
        workers: Int
    ) {
        let inputs = weights.first?.shape[1] ?? 0
        guard rows > 0, inputs > 0 else { return }
        if rows > gemvRowLimit {
            for (weight, output) in zip(weights, outputs) {
                weight.scalars.withUnsafeBufferPointer { w in
                    BLAS.gemm(transposeB: true, m: rows, n: weight.shape[0], k: inputs,
                              a: input, lda: inputs, b: w.baseAddress!, ldb: inputs,
                              c: output, ldc: weight.shape[0])
                }
            }
            return
        }

        let totalOutputs = weights.reduce(0) { $0 + $1.shape[0] }
        let sliceCount = totalOutputs * inputs < parallelThreshold ? 1
            : max(1, min(workers, totalOutputs / sliceGranule))
        withUnsafePointers(to: weights.map(\.scalars)) { pointers in
            let jobs = SliceJobs(input: input, weights: zip(pointers, weights).map { ($0, $1.shape[0]) }, outputs: outputs,
                                 rows: rows, inputs: inputs, sliceCount: sliceCount)
            BLAS.withSingleThreadedCalls {
                WorkerPool.run(count: sliceCount) { jobs.run(slice: $0) }
            }
        }
    }

    /// The pointers of one decoding-size projection, shared read-only by the slice workers,
    /// which write disjoint output ranges.
    private struct SliceJobs: @unchecked Sendable {
        let input: UnsafePointer<Float>
        let weights: [(pointer: UnsafePointer<Float>, outputs: Int)]
        let outputs: [UnsafeMutablePointer<Float>]
        let rows: Int, inputs: Int, sliceCount: Int

        /// Each weight's outputs are cut into granules of ``sliceGranule`` from its first row,
        /// and slice `slice` takes a contiguous run of the granules of all weights. Every output
        /// row therefore sits at the same offset modulo 16 of its `sgemv` call whatever the
        /// worker count, and OpenBLAS computes it the same way: results are bitwise equal.
        func run(slice: Int) {
            let granule = Projections.sliceGranule
            let granuleCounts = weights.map { ($0.outputs + granule - 1) / granule }
            let totalGranules = granuleCounts.reduce(0, +)
            let first = totalGranules * slice / sliceCount, end = totalGranules * (slice + 1) / sliceCount
            var granuleStart = 0
            for ((weight, count), output) in zip(zip(weights, granuleCounts), outputs) {
                defer { granuleStart += count }
                let lower = (max(first, granuleStart) - granuleStart) * granule
                let upper = min((min(end, granuleStart + count) - granuleStart) * granule, weight.outputs)
                guard lower < upper else { continue }
                for r in 0..<rows {
                    BLAS.gemv(m: upper - lower, n: inputs, a: weight.pointer + lower * inputs, lda: inputs,
                              x: input + r * inputs, y: output + r * weight.outputs + lower)
                }
            }
        }
    }
}
