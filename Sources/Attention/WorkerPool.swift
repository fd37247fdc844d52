import Foundation
import Synchronization

/// Helper threads that stay awake for a short while between kernel calls.
///
/// A decoding step against a few thousand cached keys takes 0.1–0.3 ms. Handing half of it to a
/// thread that is asleep (`DispatchQueue.concurrentPerform`, a parked GCD worker) costs 20–100 µs
/// on a virtual machine before that thread runs, and the calling thread has often taken every
/// work item by then. OpenMP and OpenBLAS keep their threads spinning for a while after a
/// parallel region for the same reason; this pool does the same, bounded by ``spinDuration``,
/// yielding the processor while it spins so that other runnable threads (OpenBLAS's own pool
/// during a projection) are not starved, and then parks.
///
/// One job at a time: a call that finds the pool busy (another thread's kernel call, or a call
/// from inside a job) runs on `DispatchQueue.concurrentPerform` instead.
final class WorkerPool: @unchecked Sendable {
    /// One helper per active processor beyond the calling thread's.
    static let shared = WorkerPool(helpers: max(0, ProcessInfo.processInfo.activeProcessorCount - 1))

    /// How long an idle helper keeps polling for the next job before it parks.
    static let spinDuration: Duration = .microseconds(200)

    /// One parallel loop: `body(0) … body(count − 1)`, each index run exactly once, by whichever
    /// thread claims it first.
    private final class Job: @unchecked Sendable {
        let body: @Sendable (Int) -> Void
        let count: Int
        /// Next unclaimed index; index 0 belongs to the calling thread.
        let nextIndex = Atomic<Int>(1)
        /// Indices 1..<count finished.
        let finished = Atomic<Int>(0)

        init(body: @escaping @Sendable (Int) -> Void, count: Int) {
            self.body = body
            self.count = count
        }

        /// Runs unclaimed indices until none is left.
        func runClaimedIndices() {
            while true {
                let index = nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
                guard index < count else { return }
                body(index)
                finished.wrappingAdd(1, ordering: .releasing)
            }
        }
    }

    private final class Helper: Sendable {
        let wakeUp = DispatchSemaphore(value: 0)
        /// Whether the helper is parked (or about to park) on `wakeUp`.
        let parked = Atomic<Bool>(false)
    }

    private let helpers: [Helper]
    /// Bumped once per published job; helpers poll it.
    private let generation = Atomic<Int>(0)
    private let current = Mutex<Job?>(nil)
    private let busy = Atomic<Bool>(false)

    private init(helpers count: Int) {
        helpers = (0..<count).map { _ in Helper() }
        for index in 0..<count {
            let thread = Thread { [unowned self] in self.helperLoop(index) }
            thread.name = "Attention worker \(index + 1)"
            thread.start()
        }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, in parallel on the calling thread and the
    /// helpers, and returns when all have returned.
    func run(count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 1 else {
            if count == 1 { body(0) }
            return
        }
        guard !helpers.isEmpty,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
        else {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        defer { busy.store(false, ordering: .releasing) }

        let job = Job(body: body, count: count)
        current.withLock { $0 = job }
        generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
        for helper in helpers.prefix(count - 1)
        where helper.parked.exchange(false, ordering: .sequentiallyConsistent) {
            helper.wakeUp.signal()
        }

        body(0)
        // Indices no helper has claimed yet are run here rather than waited for.
        job.runClaimedIndices()
        var polls = 0
        while job.finished.load(ordering: .acquiring) < count - 1 {
            // A helper still in the body may share this processor (more threads than cores).
            polls += 1
            if polls % 64 == 0 { sched_yield() }
        }
        current.withLock { $0 = nil }
    }

    private func helperLoop(_ index: Int) {
        var seen = 0
        while true {
            let published = waitForJob(after: seen, helper: index)
            seen = published
            if let job = current.withLock({ $0 }) {
                job.runClaimedIndices()
            }
        }
    }

    /// Polls for a generation past `seen` for ``spinDuration``, then parks until woken.
    private func waitForJob(after seen: Int, helper index: Int) -> Int {
        let clock = ContinuousClock()
        let deadline = clock.now + Self.spinDuration
        var polls = 0
        while true {
            let now = generation.load(ordering: .acquiring)
            if now != seen { return now }
            polls += 1
            if polls % 64 == 0 {
                if clock.now >= deadline { break }
                sched_yield()
            }
        }
        // Park. The flag and the generation are both sequentially consistent, so either this
        // thread sees the new job, or the publisher sees the flag and signals.
        let helper = helpers[index]
        helper.parked.store(true, ordering: .sequentiallyConsistent)
        let now = generation.load(ordering: .sequentiallyConsistent)
        if now != seen, helper.parked.exchange(false, ordering: .sequentiallyConsistent) {
            return now
        }
        helpers[index].wakeUp.wait()
        return generation.load(ordering: .acquiring)
    }
}
