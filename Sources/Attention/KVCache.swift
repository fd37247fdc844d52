/// Post-RoPE keys and values of the tokens a ``MultiHeadAttention`` layer has seen, for
/// incremental decoding.
///
/// Storage is GQA-compact: `numKVHeads · headDim` floats per token for keys and as many for
/// values, never one copy per query head, so GQA shrinks the cache by `nHeads / numKVHeads`.
/// It is head-major (`[batch, numKVHeads, capacity, headDim]`), so each head's cached keys are
/// one contiguous matrix for the decode kernel.
/// Sinks are not stored: the layer keeps its projected, rotated sinks (positions `0..<S`) beside
/// its weights and hands them to every call, so they stay visible however long the generation
/// runs.
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
    /// contiguous matrix (decoding streams them block by block), on 64-byte boundaries
    /// (``AlignedBuffer``).
    private(set) var keys: AlignedBuffer
    private(set) var values: AlignedBuffer

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
                "KVCache \(window == nil ? "capacity" : "window") (\(slots)) plus sinks (\(config.numSinks)) "
                    + "must be <= \(AttentionLimits.maxDimension)")
        }
        let count = try checkedElementCount([batch, slots, config.numKVHeads, config.headDim],
                                            of: "KVCache [batch, capacity, numKVHeads, headDim]")
        self.config = config
        self.batch = batch
        self.capacity = slots
        self.window = window
        self.lengths = Array(repeating: 0, count: batch)
        self.keys = AlignedBuffer(zeros: count)
        self.values = AlignedBuffer(zeros: count)
    }

    /// Bytes of key and value storage: `2 · batch · capacity · numKVHeads · headDim · 4`.
    public var byteCount: Int { (keys.count + values.count) * MemoryLayout<Float>.stride }

    /// Tokens currently stored for batch row `b` (at most ``capacity``).
    public func storedCount(row b: Int) -> Int { min(lengths[b], capacity) }

    /// Forgets every token; the storage is kept for reuse.
    public mutating func reset() {
        lengths = Array(repeating: 0, count: batch)
    }

    var kvWidth: Int { config.numKVHeads * config.headDim }

    /// The stored tokens of batch row `b` as the kernel reads them: one segment per run of
    /// slots in position order (a ring buffer that has wrapped has two), none when the row is
    /// empty. Valid while `self` is alive and unmutated.
    func segments(row b: Int) -> [KeyValueSegment] {
        let stored = storedCount(row: b)
        let oldest = lengths[b] - stored  // token index of the oldest stored key
        let slot = oldest % capacity
        let firstRun = min(stored, capacity - slot)
        let rowStart = b * capacity * kvWidth, headStride = capacity * config.headDim
        return [(slot, firstRun, oldest), (0, stored - firstRun, oldest + firstRun)]
            .filter { $0.1 > 0 }
            .map { slot, count, token in
                KeyValueSegment(
                    keys: keys.pointer + rowStart + slot * config.headDim,
                    values: values.pointer + rowStart + slot * config.headDim,
                    rowStride: config.headDim, headStride: headStride, rowCount: count,
                    firstPosition: config.numSinks + token, isSink: false, firstMaskColumn: nil)
            }
    }

    /// Stores the real tokens of a chunk (`tokens` holds `[batch · seq, kvWidth]` keys and
    /// values, batch row `b`'s first `counts[b]` rows real) after the tokens already held,
    /// evicting the oldest in a ring.
    mutating func append(_ tokens: ProjectedKeyValues, seq: Int, counts: [Int]) {
        let width = kvWidth, d = config.headDim, heads = config.numKVHeads
        let newKeys = tokens.keys.pointer, newValues = tokens.values.pointer
        withExtendedLifetime(tokens) {
            keys.withMutablePointer { keys in
                values.withMutablePointer { values in
                    for b in 0..<batch {
                        let count = counts[b]
                        // In a ring only the last `capacity` tokens of the chunk survive.
                        for t in max(0, count - capacity)..<count {
                            let slot = (lengths[b] + t) % capacity
                            let source = (b * seq + t) * width
                            for head in 0..<heads {
                                let target = ((b * heads + head) * capacity + slot) * d
                                (keys + target).update(from: newKeys + source + head * d, count: d)
                                (values + target).update(from: newValues + source + head * d, count: d)
                            }
                        }
                        lengths[b] += count
                    }
                }
            }
        }
    }
}

