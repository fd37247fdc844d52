import Foundation
import Synchronization
import XCTest
@testable import Attention

/// The kernel's helper threads: every index runs exactly once, whether helpers are spinning,
/// parked (a pause longer than the spin), busy with another caller's job, or asked from
/// inside a job; and `run` returns only after every index has returned.
///
/// The counters sit behind `NSLock` (pthread) rather than `Mutex`: ThreadSanitizer models
/// pthread locks, so a race it reports here is the pool's.
final class WorkerPoolTests: XCTestCase {
    /// Runs `count` indices and returns how many times each ran, read after `run` returned.
    private static func runCounting(_ count: Int) -> [Int] {
        let runs = LockedCounts(count)
        WorkerPool.run(count: count) { index in
            // Long enough that a slow helper would be caught still running after `run` returns.
            usleep(UInt32(index % 3) * 200)
            runs.increment(index)
        }
        return runs.values
    }

    func testEveryIndexRunsOnceWhileHelpersSpin() {
        for count in [0, 1, 2, 3, 7, 64] {
            for _ in 0..<20 {
                XCTAssertEqual(Self.runCounting(count), Array(repeating: 1, count: count), "count \(count)")
            }
        }
    }

    func testEveryIndexRunsOnceAfterHelpersPark() {
        for _ in 0..<10 {
            // Past the spin duration: the helpers have parked and must be woken.
            let spin = WorkerPool.spinDuration.components
            usleep(UInt32(spin.seconds * 5_000_000 + spin.attoseconds / 200_000_000_000) + 1_000)
            XCTAssertEqual(Self.runCounting(4), [1, 1, 1, 1])
        }
    }

    func testConcurrentCallersAndNestedCalls() {
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { caller in
            for _ in 0..<25 {
                if Self.runCounting(5 + caller) != Array(repeating: 1, count: 5 + caller) {
                    failures.wrappingAdd(1, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(failures.load(ordering: .relaxed), 0)

        let inner = LockedCounts(3 * 4)
        WorkerPool.run(count: 3) { outer in
            WorkerPool.run(count: 4) { index in inner.increment(outer * 4 + index) }
        }
        XCTAssertEqual(inner.values, Array(repeating: 1, count: 12))
    }
}

private final class LockedCounts: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [Int]

    init(_ count: Int) { counts = Array(repeating: 0, count: count) }

    func increment(_ index: Int) { lock.withLock { counts[index] += 1 } }

    var values: [Int] { lock.withLock { counts } }
}
