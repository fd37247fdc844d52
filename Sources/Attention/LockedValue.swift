import Foundation

/// A value that threads read and change one at a time, under a pthread mutex.
///
/// Not `Synchronization.Mutex`: on Linux that is a priority-inheritance futex, and when two
/// threads contend for it the kernel hands the lock over inside the `futex` call, with no atomic
/// in user space. ThreadSanitizer then sees no ordering between the two critical sections and
/// reports a race on the guarded value (it did, in CI, on ``BLAS``'s single-thread scopes).
/// `NSLock` is a pthread mutex, whose lock and unlock ThreadSanitizer intercepts.
final class LockedValue<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) {
        self.value = value
    }

    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
