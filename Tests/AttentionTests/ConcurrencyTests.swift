import Dispatch
import XCTest
@testable import Attention

final class ConcurrencyTests: XCTestCase {
    /// `forward` on one shared layer from 8 threads at once, both kernels, eval and training
    /// with a fixed dropout seed.
    ///
    /// The bitwise claim is made with OpenBLAS on one thread. Some OpenBLAS sgemm kernels
    /// (0.3.21's Haswell/Zen one, for instance) round differently at different thread counts,
    /// and the flash kernel sets the process-wide count to 1 while any kernel runs
    /// (`BLAS.withSingleThreadedCalls`), so with more threads a concurrent call's projections
    /// may run on 1 thread where the serial call's ran on 2: the same math in another order,
    /// not a race. With one thread throughout, any difference is the instance's own doing.
    ///
    /// Then with 2 OpenBLAS threads: the concurrent outputs match the serial ones within the
    /// shared tolerance, and the thread count the kernels save and restore is 2 again after the
    /// overlapping calls.
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
                        if threads == 1 {
                            assertBitwiseEqual(parallel, serial[i], "\(label): call \(i)")
                        } else {
                            assertClose(parallel, serial[i], "\(label): call \(i)")
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
