import Dispatch
import XCTest
@testable import Attention

final class ConcurrencyTests: XCTestCase {
    /// `forward` on one shared layer from 8 threads at once, both kernels, eval and training
    /// with a fixed dropout seed, at 1 and 2 OpenBLAS threads: every output is bitwise equal to
    /// the serial call's, and the thread count is restored after the overlapping calls.
    ///
    /// A `forward` runs every BLAS product on one OpenBLAS thread (`BLAS.withSingleThreadedCalls`),
    /// so neither the process-wide count nor another call's scope changes its bits; OpenBLAS
    /// 0.3.21's Zen sgemm does round differently at 1 and 2 threads.
    func testConcurrentForwardCallsOnOneInstanceMatchASerialCall() throws {
        let config = try AttentionConfig(dModel: 64, nHeads: 8, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 4, dropout: 0.1)
        let model = try MultiHeadAttention(config: config, seed: 21)
        let inputs = (0..<8).map { randomTensor([2, 40 + $0, 64], seed: UInt64(100 + $0)) }
        let savedThreads = BLAS.threadCount
        defer { BLAS.threadCount = savedThreads }

        for threads in [1, 2] {
            BLAS.threadCount = threads
            XCTAssertEqual(BLAS.threadCount, threads, "OpenBLAS must accept \(threads) thread(s)")
            for kernel in AttentionKernel.allCases {
                for training in [false, true] {
                    let label = "OpenBLAS threads \(threads), \(kernel), training \(training)"
                    let serial = try inputs.map {
                        try model.forward($0, mask: nil, training: training, dropoutSeed: 7, kernel: kernel).scalars
                    }
                    XCTAssertEqual(BLAS.threadCount, threads, "\(label): serial calls must restore the thread count")
                    let results = ResultBox(count: inputs.count)
                    DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
                        results.set(i, Result {
                            try model.forward(inputs[i], mask: nil, training: training, dropoutSeed: 7,
                                              kernel: kernel).scalars
                        })
                    }
                    XCTAssertEqual(BLAS.threadCount, threads, "\(label): concurrent calls must restore the thread count")
                    for i in 0..<inputs.count {
                        let parallel = try XCTUnwrap(results.get(i), "\(label): call \(i) did not finish").get()
                        assertBitwiseEqual(parallel, serial[i], "\(label): call \(i)")
                    }
                }
            }
        }
    }

    /// One threading model: a `forward`'s bits depend on neither `kernelWorkerCount` nor
    /// `BLAS.threadCount`, for prompts (128-row projection blocks, the last partial) and for
    /// decoding-size inputs (sliced matrix–vector projections), with both kernels.
    func testForwardIsBitwiseIdenticalForEveryWorkerAndOpenBLASThreadCount() throws {
        let config = try AttentionConfig(dModel: 96, nHeads: 6, useAttentionSinks: true, numAttentionSinks: 3,
                                         useGQA: true, gqaGroups: 2, dropout: 0.1)
        var model = try MultiHeadAttention(config: config, seed: 5)
        let savedThreads = BLAS.threadCount
        defer { BLAS.threadCount = savedThreads }
        for shape in [[2, Projections.rowBlock + 23, 96], [1, 3, 96]] {
            let x = randomTensor(shape, seed: UInt64(shape[1]))
            for kernel in AttentionKernel.allCases {
                var first: [Float]?
                for threads in [1, 2] {
                    BLAS.threadCount = threads
                    for workers in [1, 2, 4] {
                        model.kernelWorkerCount = workers
                        let y = try model.forward(x, mask: nil, training: true, dropoutSeed: 11, kernel: kernel).scalars
                        XCTAssertEqual(BLAS.threadCount, threads, "forward must restore the OpenBLAS thread count")
                        if let first {
                            assertBitwiseEqual(y, first, "x \(shape), \(kernel), OpenBLAS threads \(threads), workers \(workers)")
                        } else {
                            first = y
                        }
                    }
                }
            }
        }
    }
}

/// Results written from many threads, one slot each.
private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Result<[Float], Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: Result<[Float], Error>) {
        lock.lock()
        slots[index] = value
        lock.unlock()
    }

    func get(_ index: Int) -> Result<[Float], Error>? {
        lock.lock()
        defer { lock.unlock() }
        return slots[index]
    }
}
