/// Owned fp32 storage that starts on a 64-byte boundary: the layer's activations between its
/// stages (Q, K, V, the context), its projected sinks and a ``KVCache``'s keys and values.
///
/// Why not `[Float]`: a large Swift array's elements sit 16 bytes past a 32-byte boundary
/// (glibc's chunk header plus the array header), and OpenBLAS's AVX2 `sgemv` reading such rows
/// for `O += P·V` ran 25 % slower than on aligned ones (0.183 against 0.137 ms for 12 heads ×
/// 4,096 keys). And an array hands out pointers only inside `withUnsafe…` closures, so a
/// kernel call reading five of them needed a five-deep pyramid; this storage is owned by a
/// class, so its address is stable for as long as the buffer lives and the owners of the keys
/// can hand the kernel their ``KeyValueSegment``s directly.
///
/// A value type with copy-on-write: copies share storage until one of them is mutated.
/// `pointer` and `mutablePointer` are valid while the buffer they came from is alive and not
/// mutated through another copy; code that keeps such a pointer past its last use of the buffer
/// holds the buffer with `withExtendedLifetime`.
struct AlignedBuffer: @unchecked Sendable, Equatable {
    /// `@unchecked Sendable`: the memory is written only through ``mutablePointer``, which first
    /// makes the storage unique, or while a kernel call owns it.
    private final class Storage: @unchecked Sendable {
        let base: UnsafeMutablePointer<Float>
        let count: Int

        init(count: Int, zeroed: Bool = true) {
            self.count = count
            let raw = UnsafeMutableRawPointer.allocate(
                byteCount: max(1, count) * MemoryLayout<Float>.stride, alignment: AlignedBuffer.alignment)
            base = zeroed ? raw.initializeMemory(as: Float.self, repeating: 0, count: count)
                : raw.bindMemory(to: Float.self, capacity: count)
        }

        deinit { UnsafeMutableRawPointer(base).deallocate() }
    }

    /// Bytes: a cache line, and a whole AVX-512 vector.
    static let alignment = 64

    private var storage: Storage

    /// `count` zeros.
    init(zeros count: Int) {
        storage = Storage(count: count)
    }

    /// `count` elements that the caller overwrites, every one, before anything reads them: the
    /// projections' outputs, which would otherwise be zeroed on one thread (1–2 % of a forward)
    /// only to be overwritten in parallel.
    init(overwrittenCount count: Int) {
        storage = Storage(count: count, zeroed: false)
    }

    /// A copy of `scalars`.
    init(_ scalars: [Float]) {
        storage = Storage(count: scalars.count)
        storage.base.update(from: scalars, count: scalars.count)
    }

    var count: Int { storage.count }

    /// The first element, read-only.
    var pointer: UnsafePointer<Float> { UnsafePointer(storage.base) }

    /// The first element, for writing; copies the storage first if another buffer shares it.
    var mutablePointer: UnsafeMutablePointer<Float> {
        mutating get {
            if !isKnownUniquelyReferenced(&storage) {
                let copy = Storage(count: storage.count)
                copy.base.update(from: storage.base, count: storage.count)
                storage = copy
            }
            return storage.base
        }
    }

    /// Runs `body` with ``mutablePointer``, the storage held alive for the call.
    mutating func withMutablePointer<Result>(
        _ body: (UnsafeMutablePointer<Float>) throws -> Result
    ) rethrows -> Result {
        let base = mutablePointer
        return try withExtendedLifetime(storage) { try body(base) }
    }

    /// The elements as an array.
    var array: [Float] { Array(UnsafeBufferPointer(start: storage.base, count: storage.count)) }

    static func == (lhs: AlignedBuffer, rhs: AlignedBuffer) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.storage === rhs.storage { return true }
        return UnsafeBufferPointer(start: lhs.pointer, count: lhs.count)
            .elementsEqual(UnsafeBufferPointer(start: rhs.pointer, count: rhs.count))
    }
}
