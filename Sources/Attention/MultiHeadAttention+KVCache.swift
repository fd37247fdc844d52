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
            x, tokenOffsets: cache.lengths, tokenCounts: counts, mask: nil, cache: cache,
            training: training, dropoutSeed: dropoutSeed, kernel: kernel)
        cache.append(result.tokens, seq: n, counts: counts)
        return result.output
    }
}
