import Dispatch
import XCTest
@testable import Attention

final class ConcurrencyTests: XCTestCase {
    /// `forward` on one shared layer from 8 threads at once, both kernels, eval and training
    /// with a fixed dropout seed: every output is bit-identical to a serial call.
    func testConcurrentForwardCallsOnOneInstanceMatchASerialCall() throws {
        let config = try AttentionConfig(dModel: 64, nHeads: 8, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 4, dropout: 0.1)
        let model = try MultiHeadAttention(config: config, seed: 21)
        let inputs = (0..<8).map { randomTensor([2, 40 + $0, 64], seed: UInt64(100 + $0)) }
        let savedThreads = BLAS.threadCount
        for kernel in AttentionKernel.allCases {
            for training in [false, true] {
                let serial = try inputs.map {
                    try model.forward($0, mask: nil, training: training, dropoutSeed: 7, kernel: kernel).scalars
                }
                let results = ResultBox(count: inputs.count)
                DispatchQueue.concurrentPerform(iterations: inputs.count) { i in
                    results.set(i, Result {
                        try model.forward(inputs[i], mask: nil, training: training, dropoutSeed: 7, kernel: kernel).scalars
                    })
                }
                for i in 0..<inputs.count {
                    let parallel = try XCTUnwrap(results.get(i)).get()
                    XCTAssertTrue(parallel.elementsEqual(serial[i]) { $0.bitPattern == $1.bitPattern },
                                  "thread \(i), \(kernel), training \(training)")
                }
            }
        }
        XCTAssertEqual(BLAS.threadCount, savedThreads, "the OpenBLAS thread count must be restored")
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
