import XCTest
@testable import Attention

/// Projections against float64 products, on both paths (matrix–vector for up to 4 rows, split
/// across workers; 128-row sgemm blocks above, the last one partial), with weights whose output
/// counts are not multiples of the 16-row slice granule; and bitwise equality of both paths for
/// every worker count and OpenBLAS thread count.
///
/// Tolerance: |y − y64| ≤ 1e-6 · Σ|x·w| per output (fp32 sums of 700 products).
final class ProjectionsTests: XCTestCase {
    func testMatchFloat64AndAreBitwiseEqualForEveryWorkerAndOpenBLASThreadCount() {
        let savedThreads = BLAS.threadCount
        defer { BLAS.threadCount = savedThreads }
        BLAS.threadCount = 1
        let inputs = 700
        let weights = [100, 37, 64].enumerated().map { index, outputs in
            randomTensor([outputs, inputs], seed: UInt64(10 + index))
        }
        XCTAssertGreaterThan(weights.reduce(0) { $0 + $1.count }, Projections.parallelThreshold)
        for rows in [1, 2, 4, 5, 2 * Projections.rowBlock + 44] {
            let x = randomTensor([rows, inputs], seed: UInt64(rows), amplitude: 2).scalars
            let single = Projections.apply(x, rows: rows, weights: weights, workers: 1).map(\.array)
            for (weight, result) in zip(weights, single) {
                let outputs = weight.shape[0]
                XCTAssertEqual(result.count, rows * outputs)
                for r in 0..<rows {
                    for o in 0..<outputs {
                        var exact = 0.0, magnitude = 0.0
                        for i in 0..<inputs {
                            let product = Double(x[r * inputs + i]) * Double(weight.scalars[o * inputs + i])
                            exact += product
                            magnitude += abs(product)
                        }
                        XCTAssertLessThanOrEqual(abs(Double(result[r * outputs + o]) - exact), 1e-6 * magnitude,
                                                 "rows \(rows), weight \(outputs)×\(inputs), y[\(r), \(o)]")
                    }
                }
            }
            for threads in [1, 2] {
                BLAS.threadCount = threads
                for workers in 1...5 {
                    XCTAssertEqual(Projections.apply(x, rows: rows, weights: weights, workers: workers).map(\.array),
                                   single, "rows \(rows), workers \(workers), OpenBLAS threads \(threads)")
                }
            }
            BLAS.threadCount = 1
        }
    }
}
