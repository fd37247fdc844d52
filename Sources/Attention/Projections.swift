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

    /// `input · weights[i]ᵀ` for each weight `[outputsᵢ, inputs]`, `input` being `[rows, inputs]`.
    static func apply(_ input: [Float], rows: Int, weights: [Tensor], workers: Int) -> [[Float]] {
        let inputs = weights.first?.shape[1] ?? 0
        var results = weights.map { [Float](repeating: 0, count: rows * $0.shape[0]) }
        guard rows > 0, inputs > 0 else { return results }
        if rows > gemvRowLimit {
            input.withUnsafeBufferPointer { input in
                for (weight, index) in zip(weights, results.indices) {
                    weight.scalars.withUnsafeBufferPointer { w in
                        results[index].withUnsafeMutableBufferPointer { y in
                            BLAS.gemm(transposeB: true, m: rows, n: weight.shape[0], k: inputs,
                                      a: input.baseAddress!, lda: inputs, b: w.baseAddress!, ldb: inputs,
                                      c: y.baseAddress!, ldc: weight.shape[0])
                        }
                    }
                }
            }
            return results
        }

        // Weight i's `[rows, outputsᵢ]` result sits in `flat` at `rows · (outputs before it)`.
        let totalOutputs = weights.reduce(0) { $0 + $1.shape[0] }
        let sliceCount = totalOutputs * inputs < parallelThreshold ? 1
            : max(1, min(workers, totalOutputs / sliceGranule))
        var flat = [Float](repeating: 0, count: rows * totalOutputs)
        input.withUnsafeBufferPointer { input in
            flat.withUnsafeMutableBufferPointer { flat in
                withWeightPointers(weights) { pointers in
                    let jobs = SliceJobs(input: input.baseAddress!, weights: pointers, output: flat.baseAddress!,
                                         rows: rows, inputs: inputs, sliceCount: sliceCount)
                    BLAS.withSingleThreadedCalls {
                        WorkerPool.run(count: sliceCount) { jobs.run(slice: $0) }
                    }
                }
            }
        }
        var offset = 0
        for index in results.indices {
            results[index] = Array(flat[offset..<offset + results[index].count])
            offset += results[index].count
        }
        return results
    }

    /// The pointers of one decoding-size projection, shared read-only by the slice workers,
    /// which write disjoint output ranges.
    private struct SliceJobs: @unchecked Sendable {
        let input: UnsafePointer<Float>
        let weights: [(pointer: UnsafePointer<Float>, outputs: Int)]
        let output: UnsafeMutablePointer<Float>
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
            var granuleStart = 0, resultOffset = 0
            for (weight, count) in zip(weights, granuleCounts) {
                defer {
                    granuleStart += count
                    resultOffset += rows * weight.outputs
                }
                let lower = (max(first, granuleStart) - granuleStart) * granule
                let upper = min((min(end, granuleStart + count) - granuleStart) * granule, weight.outputs)
                guard lower < upper else { continue }
                for r in 0..<rows {
                    BLAS.gemv(m: upper - lower, n: inputs, a: weight.pointer + lower * inputs, lda: inputs,
                              x: input + r * inputs, y: output + resultOffset + r * weight.outputs + lower)
                }
            }
        }
    }

    /// Runs `body` with each weight's base address and output count, valid for the call.
    private static func withWeightPointers(
        _ weights: [Tensor], _ body: ([(pointer: UnsafePointer<Float>, outputs: Int)]) -> Void
    ) {
        func nest(_ index: Int, _ collected: [(pointer: UnsafePointer<Float>, outputs: Int)]) {
            guard index < weights.count else { return body(collected) }
            weights[index].scalars.withUnsafeBufferPointer { w in
                nest(index + 1, collected + [(w.baseAddress!, weights[index].shape[0])])
            }
        }
        nest(0, [])
    }
}
