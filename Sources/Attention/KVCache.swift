/// Post-RoPE keys and values of the tokens a ``MultiHeadAttention`` layer has seen, for
/// incremental decoding.
///
/// Storage is GQA-compact: `numKVHeads · headDim` floats per token for keys and as many for
/// values, never one copy per query head, so GQA shrinks the cache by `nHeads / numKVHeads`.
/// It is head-major (`[batch, numKVHeads, capacity, headDim]`), so each head's cached keys are
/// one contiguous matrix for the decode kernel.
/// Sinks are not stored: the layer projects its `sinkStates` on every call (positions `0..<S`),
/// so they stay visible however long the generation runs.
///
/// Two layouts, both allocated once:
/// - **Linear** (``init(config:batch:capacity:)``): up to `capacity` tokens per batch row; a
///   call that would overflow throws.
/// - **Sliding window** (``init(config:batch:window:)``, StreamingLLM): a ring buffer of
///   `window` slots. A token query at position `p` sees the sinks and the token keys at
///   positions `p − window + 1 ... p`; older keys are evicted as new ones arrive. Memory stays at
///   `S + window` positions however many tokens pass through.
///
/// Positions continue from what the cache holds: the next token of batch row `b` sits at
/// `S + lengths[b]`, so queries are bottom-right aligned against the cached keys.
public struct KVCache: Sendable, Equatable {
    /// The configuration of the layer this cache belongs to.
    public let config: AttentionConfig
    /// Batch rows.
    public let batch: Int
    /// Token slots per batch row.
    public let capacity: Int
    /// Sliding window in tokens, or `nil` for a linear cache.
    public let window: Int?
    /// Tokens each batch row has processed so far (also the position offset of its next token).
    public internal(set) var lengths: [Int]
    /// `[batch, numKVHeads, capacity, headDim]`: head-major, so one head's cached keys are a
    /// contiguous matrix (decoding reads them with one streaming sgemv per block). The
    /// tensor starts at element ``keysOffset`` of `keys` (``valuesOffset`` of `values`).
    var keys: [Float]
    var values: [Float]
    /// Where the cached tensors start in their arrays: the first 64-byte boundary of the
    /// array's storage. A large Swift array's elements sit 16 bytes past a 32-byte boundary
    /// (glibc's chunk header plus the array header), and OpenBLAS's AVX2 `sgemv` reading such
    /// rows for `O += P·V` ran 25 % slower than on aligned ones (0.183 against 0.137 ms for
    /// 12 heads × 4,096 keys). A copy of the cache keeps the offsets (and stays correct) even
    /// if its new storage is aligned differently.
    let keysOffset: Int
    let valuesOffset: Int
    /// Elements of each cached tensor: `batch · capacity · numKVHeads · headDim`.
    private let elementCount: Int

    /// A linear cache holding up to `capacity` tokens per batch row.
    ///
    /// - Throws: ``AttentionError`` when `batch < 1`, `capacity < 1`, or the storage size
    ///   overflows or exceeds ``AttentionLimits``.
    public init(config: AttentionConfig, batch: Int, capacity: Int) throws {
        try self.init(config: config, batch: batch, slots: capacity, window: nil)
    }

    /// A StreamingLLM cache: the sinks plus the last `window` tokens of each batch row.
    ///
    /// - Throws: ``AttentionError`` when `batch < 1`, `window < 1`, or the storage size
    ///   overflows or exceeds ``AttentionLimits``.
    public init(config: AttentionConfig, batch: Int, window: Int) throws {
        guard window >= 1 else {
            throw AttentionError.invalidInput("KVCache window (\(window)) must be >= 1")
        }
        try self.init(config: config, batch: batch, slots: window, window: window)
    }

    private init(config: AttentionConfig, batch: Int, slots: Int, window: Int?) throws {
        guard batch >= 1 else { throw AttentionError.invalidInput("KVCache batch (\(batch)) must be >= 1") }
        guard slots >= 1 else { throw AttentionError.invalidInput("KVCache capacity (\(slots)) must be >= 1") }
        guard slots <= AttentionLimits.maxDimension - config.numSinks else {
            throw AttentionError.sizeLimitExceeded(
                "KVCache capacity (\(slots)) plus sinks (\(config.numSinks)) must be <= \(AttentionLimits.maxDimension)")
        }
        let count = try checkedElementCount([batch, slots, config.numKVHeads, config.headDim],
                                            of: "KVCache [batch, capacity, numKVHeads, headDim]")
        self.config = config
        self.batch = batch
        self.capacity = slots
        self.window = window
        self.lengths = Array(repeating: 0, count: batch)
        let padding = Self.alignment / MemoryLayout<Float>.stride
        let keys = Array(repeating: Float(0), count: count + padding)
        let values = Array(repeating: Float(0), count: count + padding)
        self.keysOffset = Self.alignedOffset(keys)
        self.valuesOffset = Self.alignedOffset(values)
        self.keys = keys
        self.values = values
        self.elementCount = count
    }

    /// Alignment of the cached tensors, in bytes: a cache line, and a whole AVX-512 vector.
    static let alignment = 64

    /// Elements from the start of `array`'s storage to its first ``alignment``-byte boundary.
    private static func alignedOffset(_ array: [Float]) -> Int {
        let address = array.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) }
        return (alignment - address % alignment) % alignment / MemoryLayout<Float>.stride
    }

    /// Bytes of key and value storage: `2 · batch · capacity · numKVHeads · headDim · 4`.
    public var byteCount: Int { 2 * elementCount * MemoryLayout<Float>.stride }

    /// Tokens currently stored for batch row `b` (at most ``capacity``).
    public func storedCount(row b: Int) -> Int { min(lengths[b], capacity) }

    /// Forgets every token; the storage is kept for reuse.
    public mutating func reset() {
        lengths = Array(repeating: 0, count: batch)
    }

    var kvWidth: Int { config.numKVHeads * config.headDim }

    /// The stored tokens of every row as runs of slots in position order.
    func history() -> MultiHeadAttention.KeyValueHistory {
        let s = config.numSinks
        let spans = lengths.map { length -> [(slot: Int, count: Int, firstPosition: Int)] in
            let stored = min(length, capacity)
            let oldest = length - stored  // token index of the oldest stored key
            let slot = oldest % capacity
            let firstRun = min(stored, capacity - slot)
            return [(slot, firstRun, s + oldest), (0, stored - firstRun, s + oldest + firstRun)]
        }
        return .init(keys: keys, values: values, keysOffset: keysOffset, valuesOffset: valuesOffset,
                     batchStride: capacity * kvWidth,
                     headStride: capacity * config.headDim, spans: spans)
    }

    /// Stores the real tokens of a chunk (`[batch · seq, kvWidth]` keys and values) after the
    /// tokens already held, evicting the oldest in a ring.
    mutating func append(keys newKeys: [Float], values newValues: [Float], seq: Int, counts: [Int]) {
        let width = kvWidth, d = config.headDim
        keys.withUnsafeMutableBufferPointer { keys in
        values.withUnsafeMutableBufferPointer { values in
            for b in 0..<batch {
                let count = counts[b]
                // In a ring only the last `capacity` tokens of the chunk survive.
                for t in max(0, count - capacity)..<count {
                    let slot = (lengths[b] + t) % capacity
                    let source = (b * seq + t) * width
                    for head in 0..<config.numKVHeads {
                        let target = ((b * config.numKVHeads + head) * capacity + slot) * d
                        for e in 0..<d {
                            keys[keysOffset + target + e] = newKeys[source + head * d + e]
                            values[valuesOffset + target + e] = newValues[source + head * d + e]
                        }
                    }
                }
                lengths[b] += count
            }
        }}
    }
}

extension MultiHeadAttention {
    /// Attention for new tokens against a ``KVCache``, which then holds them too.
    ///
    /// Token `t` of batch row `b` sits at position `S + cache.lengths[b] + t`. Its query sees
    /// the sinks, the cached tokens and the chunk's tokens up to itself (causal, bottom-right
    /// aligned), within the cache's window if it has one. Prefill (a whole prompt) and decoding
    /// (one token per call) are the same call; the outputs equal those of one full
    /// ``forward(_:mask:training:dropoutSeed:kernel:)`` over the whole sequence (under the
    /// equivalent band mask for a window).
    ///
    /// - Parameters:
    ///   - x: `[batch, seq, dModel]` new tokens; `batch` must be `cache.batch`.
    ///   - cache: the layer's cache, made with this layer's `config`; updated only on success.
    ///   - lengths: real tokens per batch row when rows are right-padded to `seq` (each in
    ///     `0...seq`); padded tokens are never visible, their output rows are zeros and they are
    ///     not stored. `nil` means every token is real.
    ///   - training, dropoutSeed, kernel: as in ``forward(_:mask:training:dropoutSeed:kernel:)``.
    /// - Returns: `[batch, seq, dModel]`.
    /// - Throws: ``AttentionError`` for a cache of another configuration, a batch mismatch,
    ///   bad `lengths`, or a linear cache without room for the new tokens; the cache is then
    ///   unchanged.
    public func forward(
        _ x: Tensor, cache: inout KVCache, lengths: [Int]? = nil, training: Bool = false,
        dropoutSeed: UInt64? = nil, kernel: AttentionKernel? = nil
    ) throws -> Tensor {
        guard cache.config == config else {
            throw AttentionError.invalidInput(
                "cache config (dModel \(cache.config.dModel), nHeads \(cache.config.nHeads), numKVHeads "
                    + "\(cache.config.numKVHeads), sinks \(cache.config.numSinks)) must equal this layer's config "
                    + "(dModel \(config.dModel), nHeads \(config.nHeads), numKVHeads \(config.numKVHeads), "
                    + "sinks \(config.numSinks)); make the cache from the layer's config")
        }
        let (batch, n) = try validateInput(x, extraKeys: cache.capacity)
        guard batch == cache.batch else {
            throw AttentionError.invalidInput("x batch (\(batch)) must equal the cache's batch (\(cache.batch))")
        }
        let counts = lengths ?? Array(repeating: n, count: batch)
        guard counts.count == batch else {
            throw AttentionError.invalidInput("lengths count (\(counts.count)) must equal batch (\(batch))")
        }
        for (b, count) in counts.enumerated() where count < 0 || count > n {
            throw AttentionError.invalidInput("lengths[\(b)] (\(count)) must be in 0...\(n) (seq)")
        }
        if cache.window == nil {
            for b in 0..<batch where cache.lengths[b] + counts[b] > cache.capacity {
                throw AttentionError.invalidInput(
                    "cache row \(b) holds \(cache.lengths[b]) of \(cache.capacity) tokens and cannot take "
                        + "\(counts[b]) more; use a larger capacity or a sliding window")
            }
        }
        guard batch * n > 0 else { return Tensor(zeros: [batch, n, config.dModel]) }

        let result = try run(
            x, tokenOffsets: cache.lengths, tokenCounts: counts, mask: nil, history: cache.history(),
            window: cache.window, training: training, dropoutSeed: dropoutSeed, kernel: kernel)
        cache.append(keys: result.keys, values: result.values, seq: n, counts: counts)
        return result.output
    }
}
