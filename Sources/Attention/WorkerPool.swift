import Foundation
import Synchronization

/// Helper threads that stay awake for a short while between kernel calls.
///
/// A decoding step against a few thousand cached keys takes 0.1–0.3 ms. Handing half of it to a
/// thread that is asleep (`DispatchQueue.concurrentPerform`, a parked GCD worker) costs 20–100 µs
/// on a virtual machine before that thread runs, and the calling thread has often taken every
/// work item by then. OpenMP and OpenBLAS keep their threads spinning for a while after a
/// parallel region for the same reason; this pool does the same for ``spinDuration`` of each
/// helper's processor time, then parks it.
///
/// Measured on the 2-core VM (12 heads, 4 KV heads, one query against 1,024 keys, ten
/// processes each): with a wall-clock spin budget and `sched_yield` in the loop, half the
/// processes ran at the one-thread speed (0.099 ms against 0.052), because a parked helper
/// woken onto the caller's core parked again as soon as it got to run; with the
/// processor-time budget, ten of ten ran at 0.052 ms. While OpenBLAS's own pool threads spin
/// (2²⁸ cycles after a multi-threaded OpenBLAS call or library start-up) they can still hold
/// a core; decoding-size projections therefore run single-threaded on this pool
/// (`Projections`).
///
/// One job at a time: a call that finds the pool busy (another thread's kernel call, or a call
/// from inside a job) runs on `DispatchQueue.concurrentPerform` instead.
final class WorkerPool: @unchecked Sendable {
    /// One helper per active processor beyond the calling thread's.
    private static let shared = WorkerPool(helpers: max(0, ProcessInfo.processInfo.activeProcessorCount - 1))

    /// Processor time an idle helper spends polling for the next job before it parks.
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
    private let current = LockedValue<Job?>(nil)
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
    /// helpers, and returns when all have returned. A single index runs on the calling thread
    /// without starting the pool.
    static func run(count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 1 else {
            if count == 1 { body(0) }
            return
        }
        shared.run(count: count, body)
    }

    /// Runs `body(i)` for every `i` in `0..<count` on at most `workers` workers (the calling
    /// thread among them), each taking the next unclaimed index until none is left.
    static func forEach(_ count: Int, workers: Int, _ body: @escaping @Sendable (Int) -> Void) {
        forEach(count, workers: workers, scratchCount: 0) { index, _ in body(index) }
    }

    /// ``forEach(_:workers:_:)`` with `scratchCount` floats of scratch per worker, allocated
    /// once per worker and reused by every index it takes (uninitialised: `body` writes before
    /// it reads).
    static func forEach(
        _ count: Int, workers: Int, scratchCount: Int,
        _ body: @escaping @Sendable (_ index: Int, _ scratch: UnsafeMutablePointer<Float>) -> Void
    ) {
        guard count > 0 else { return }
        let next = Atomic<Int>(0)
        run(count: min(max(1, workers), count)) { _ in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, scratchCount))
            defer { scratch.deallocate() }
            while true {
                let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard index < count else { return }
                body(index, scratch)
            }
        }
    }

    private func run(count: Int, _ body: @escaping @Sendable (Int) -> Void) {
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

    /// Polls for a generation past `seen` until it has spent ``spinDuration`` of its own
    /// processor time doing so, then parks until woken.
    ///
    /// The budget is processor time, not wall time: a helper that was preempted (a woken thread
    /// is often queued on its waker's core) must not park the moment it runs again, or it is
    /// woken onto the waker's core again and never spreads to the idle one. Spinning, it stays
    /// runnable and the scheduler moves it.
    private func waitForJob(after seen: Int, helper index: Int) -> Int {
        let budget = Self.spinDuration.components
        let budgetNanoseconds = Int(budget.seconds) * 1_000_000_000 + Int(budget.attoseconds / 1_000_000_000)
        let start = threadProcessorNanoseconds()
        var polls = 0
        while true {
            let now = generation.load(ordering: .acquiring)
            if now != seen { return now }
            polls += 1
            if polls % 256 == 0, threadProcessorNanoseconds() - start >= budgetNanoseconds { break }
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

/// Processor time consumed by the calling thread, in nanoseconds.
private func threadProcessorNanoseconds() -> Int {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return time.tv_sec * 1_000_000_000 + time.tv_nsec
}
