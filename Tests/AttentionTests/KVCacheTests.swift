import XCTest
@testable import Attention

/// Incremental decoding against the full forward pass it must reproduce.
///
/// Tolerance: the shared ``Tolerance`` (`assertClose`), max |Δ| ≤ max(1e-5, 1e-5 · max |full|).
/// Cached and full runs differ only in how the kernels block and sum the same scores.
final class KVCacheTests: XCTestCase {
    func layer(gqa: Bool = true, sinks: Int = 3, dropout: Float = 0, seed: UInt64 = 1) throws -> MultiHeadAttention {
        let config = try AttentionConfig(dModel: 48, nHeads: 6, useAttentionSinks: sinks > 0,
                                         numAttentionSinks: max(sinks, 1), useGQA: gqa, gqaGroups: 2,
                                         dropout: dropout)
        var model = try MultiHeadAttention(config: config, seed: seed)
        if sinks > 0 {
            try model.setWeight(randomTensor([sinks, 48], seed: seed ^ 0x51), for: .sinkStates)
        }
        return model
    }

    /// Runs `x` through `cache` in chunks of the given sizes and concatenates the outputs.
    func decode(_ model: MultiHeadAttention, _ x: Tensor, chunks: [Int], cache: inout KVCache,
                kernel: AttentionKernel, training: Bool = false) throws -> Tensor {
        var outputs: [Tensor] = []
        var start = 0
        for size in chunks {
            outputs.append(try model.forward(tokenRows(x, start..<(start + size)), cache: &cache, training: training,
                                             dropoutSeed: 77, kernel: kernel))
            start += size
        }
        XCTAssertEqual(start, x.shape[1])
        let (batch, d) = (x.shape[0], x.shape[2])
        var scalars: [Float] = []
        for b in 0..<batch {
            for output in outputs {
                let n = output.shape[1]
                scalars += output.scalars[(b * n * d)..<((b + 1) * n * d)]
            }
        }
        return try Tensor(shape: [batch, start, d], scalars: scalars)
    }

    func testPrefillThenDecodeEqualsOneFullForward() throws {
        let model = try layer()
        let x = randomTensor([2, 40, 48], seed: 3, amplitude: 2)
        for kernel in AttentionKernel.allCases {
            let full = try model.forward(x, mask: nil, training: false, dropoutSeed: nil, kernel: kernel)
            for chunks in [[13] + Array(repeating: 1, count: 27), [5, 5, 5, 5, 20], [1, 39], [40]] {
                var cache = try KVCache(config: model.config, batch: 2, capacity: 64)
                let cached = try decode(model, x, chunks: chunks, cache: &cache, kernel: kernel)
                assertClose(cached, full, "\(kernel), chunks \(chunks)")
                XCTAssertEqual(cache.lengths, [40, 40])
            }
        }
    }

    func testDecodeWithoutSinksOrGQAEqualsOneFullForward() throws {
        let model = try layer(gqa: false, sinks: 0)
        let x = randomTensor([1, 25, 48], seed: 4, amplitude: 2)
        let full = try model.forward(x)
        var cache = try KVCache(config: model.config, batch: 1, capacity: 25)
        let cached = try decode(model, x, chunks: [10] + Array(repeating: 1, count: 15), cache: &cache, kernel: .flash)
        assertClose(cached, full, "no sinks, no GQA")
    }

    func testDropoutThroughTheCacheDrawsTheFullForwardBits() throws {
        let model = try layer(dropout: 0.3)
        let x = randomTensor([1, 24, 48], seed: 5)
        let full = try model.forward(x, mask: nil, training: true, dropoutSeed: 77, kernel: .reference)
        var cache = try KVCache(config: model.config, batch: 1, capacity: 24)
        let cached = try decode(model, x, chunks: [8, 1, 1, 14], cache: &cache, kernel: .flash, training: true)
        assertClose(cached, full, "dropout keyed by positions")
    }

    /// StreamingLLM: a window of W equals the full forward under the mask that hides token keys
    /// `j <= i − W` (sinks stay visible), while the cache holds only W tokens.
    func testSlidingWindowEqualsFullForwardUnderTheBandMask() throws {
        let model = try layer()
        let n = 37
        let x = randomTensor([2, n, 48], seed: 6, amplitude: 2)
        for window in [1, 4, 8] {
            let band = try Tensor(shape: [n, n], scalars: (0..<(n * n)).map { index in
                index / n - index % n >= window ? -.infinity : 0
            })
            for kernel in AttentionKernel.allCases {
                let full = try model.forward(x, mask: band, training: false, dropoutSeed: nil, kernel: kernel)
                for chunks in [[5] + Array(repeating: 1, count: 32), [3, 11, 2, 21], [n]] {
                    var cache = try KVCache(config: model.config, batch: 2, window: window)
                    let bytes = cache.byteCount
                    let cached = try decode(model, x, chunks: chunks, cache: &cache, kernel: kernel)
                    assertClose(cached, full, "window \(window), \(kernel), chunks \(chunks)")
                    XCTAssertEqual(cache.byteCount, bytes, "the ring never grows")
                    XCTAssertEqual(cache.capacity, window)
                    XCTAssertEqual(cache.storedCount(row: 0), min(n, window))
                }
            }
        }
    }

    /// Right-padded rows of different lengths: each row equals a batch-1 run of its real tokens,
    /// padded rows are zeros, and decoding continues from each row's own length.
    func testPaddedRowsOfDifferentLengthsNeverSeePaddingKeys() throws {
        let model = try layer()
        let x = randomTensor([3, 9, 48], seed: 7, amplitude: 2)
        let lengths = [9, 4, 0]
        let next = randomTensor([3, 1, 48], seed: 8, amplitude: 2)
        for kernel in AttentionKernel.allCases {
            var cache = try KVCache(config: model.config, batch: 3, capacity: 16)
            let prefill = try model.forward(x, cache: &cache, lengths: lengths, kernel: kernel)
            let step = try model.forward(next, cache: &cache, kernel: kernel)
            XCTAssertEqual(cache.lengths, [10, 5, 1])
            for b in 0..<3 {
                let row = try Tensor(shape: [1, lengths[b], 48],
                                     scalars: Array(x.scalars[(b * 9 * 48)..<((b * 9 + lengths[b]) * 48)]))
                let sequence = try Tensor(shape: [1, lengths[b] + 1, 48],
                                          scalars: row.scalars + next.scalars[(b * 48)..<((b + 1) * 48)])
                let alone = try model.forward(sequence, mask: nil, training: false, dropoutSeed: nil, kernel: kernel)
                let prefillRow = Array(prefill.scalars[(b * 9 * 48)..<((b + 1) * 9 * 48)])
                assertClose(try Tensor(shape: [1, lengths[b], 48], scalars: Array(prefillRow.prefix(lengths[b] * 48))),
                            tokenRows(alone, 0..<lengths[b]), "prefill row \(b), \(kernel)")
                XCTAssertTrue(prefillRow.dropFirst(lengths[b] * 48).allSatisfy { $0 == 0 }, "padding rows are zeros")
                assertClose(try Tensor(shape: [1, 1, 48], scalars: Array(step.scalars[(b * 48)..<((b + 1) * 48)])),
                            tokenRows(alone, lengths[b]..<(lengths[b] + 1)), "decode row \(b), \(kernel)")
            }
        }
    }

    func testSplitKVDecodeEqualsTheUnsplitKernel() throws {
        var model = try layer()
        let x = randomTensor([1, 300, 48], seed: 9, amplitude: 2)
        var prefilled = try KVCache(config: model.config, batch: 1, capacity: 320)
        _ = try model.forward(tokenRows(x, 0..<290), cache: &prefilled)
        let steps = tokenRows(x, 290..<300)
        var outputs: [KeySplit: Tensor] = [:]
        for split in [KeySplit.never, .chunks(2), .chunks(7), .chunks(1000)] {
            model.keySplit = split
            for workers in [1, 3] {
                model.kernelWorkerCount = workers
                var cache = prefilled
                let output = try decode(model, steps, chunks: [1, 1, 3, 5], cache: &cache, kernel: .flash)
                if let previous = outputs[split] {
                    XCTAssertEqual(previous, output, "\(split): workers must not change the bits")
                }
                outputs[split] = output
            }
        }
        var cache = prefilled
        let reference = try decode(model, steps, chunks: [1, 1, 3, 5], cache: &cache, kernel: .reference)
        for (split, output) in outputs {
            assertClose(output, reference, "\(split)")
        }
    }

    func testAutomaticKeySplitEngagesOnlyForFewQueriesAndIdleWorkers() {
        XCTAssertEqual(FlashAttention.automaticKeyChunks(queryCount: 1, keyCount: 4096, rowsAndHeads: 2,
                                                         queryBlocks: 1, workers: 4), 8)
        XCTAssertEqual(FlashAttention.automaticKeyChunks(queryCount: 1, keyCount: 600, rowsAndHeads: 2,
                                                         queryBlocks: 1, workers: 4), 1, "chunks keep >= 512 keys")
        XCTAssertEqual(FlashAttention.automaticKeyChunks(queryCount: 1, keyCount: 4096, rowsAndHeads: 12,
                                                         queryBlocks: 1, workers: 2), 1, "enough items already")
        XCTAssertEqual(FlashAttention.automaticKeyChunks(queryCount: 64, keyCount: 4096, rowsAndHeads: 1,
                                                         queryBlocks: 1, workers: 4), 1, "prefill is not split")
    }

    /// The automatic split engages here (one query, one key/value head, 4,096 keys) and is
    /// sized for the processors, not the call's workers, so 1, 2, 3 and 4 workers sum the same
    /// chunks in the same order: bitwise equal, and equal to the unsplit kernel within tolerance.
    func testAutomaticKeySplitGivesTheSameBitsForEveryWorkerCount() throws {
        let (heads, keys, d) = (4, 4096, 16)
        let q = randomTensor([1, heads, 1, d], seed: 31, amplitude: 2)
        let k = randomTensor([1, 1, keys, d], seed: 32, amplitude: 2), v = randomTensor([1, 1, keys, d], seed: 33)
        func run(_ workers: Int, _ split: KeySplit) throws -> [Float] {
            try scaledDotProductAttention(queries: q, keys: k, values: v, nHeads: heads, numKVHeads: 1,
                                          workers: workers, keySplit: split).scalars
        }
        let serial = try run(1, .automatic)
        for workers in 2...4 {
            assertBitwiseEqual(try run(workers, .automatic), serial, "automatic split, \(workers) workers vs 1")
        }
        assertClose(serial, try run(1, .never), "automatic split vs unsplit")
    }

    func testCacheStoresKeyValueHeadsOnly() throws {
        let gqa = try KVCache(config: try layer(gqa: true).config, batch: 2, capacity: 100)
        let mha = try KVCache(config: try layer(gqa: false).config, batch: 2, capacity: 100)
        XCTAssertEqual(gqa.byteCount, 2 * 2 * 100 * (2 * 8) * 4)
        XCTAssertEqual(mha.byteCount, 3 * gqa.byteCount, "6 query heads over 2 KV heads")
    }

    // MARK: - Bad input: thrown, cache unchanged

    func testCachedTensorsAre64ByteAlignedAndACopyDecodesIndependently() throws {
        let model = try layer()
        let x = randomTensor([2, 9, 48], seed: 77)
        var cache = try KVCache(config: model.config, batch: 2, capacity: 16)
        for buffer in [cache.keys, cache.values] {
            XCTAssertEqual(Int(bitPattern: buffer.pointer) % 64, 0)
        }
        XCTAssertEqual(cache.byteCount, 2 * 2 * 16 * model.config.numKVHeads * model.config.headDim * 4)

        _ = try model.forward(tokenRows(x, 0..<8), cache: &cache)
        // The copy shares storage until one of them decodes (copy on write); both must then
        // decode exactly as the original would, from aligned storage of their own.
        var copy = cache
        let fromCopy = try model.forward(tokenRows(x, 8..<9), cache: &copy)
        let fromOriginal = try model.forward(tokenRows(x, 8..<9), cache: &cache)
        XCTAssertEqual(fromCopy, fromOriginal)
        for buffer in [copy.keys, copy.values] {
            XCTAssertEqual(Int(bitPattern: buffer.pointer) % 64, 0)
        }
        XCTAssertNotEqual(copy.keys.pointer, cache.keys.pointer, "a decoded copy owns its storage")
        assertClose(fromOriginal, tokenRows(try model.forward(x), 8..<9), "decode after a copy")
        XCTAssertEqual(copy.lengths, [9, 9])
    }

    func testCacheFromAnotherConfigurationThrows() throws {
        let model = try layer(gqa: true)
        var cache = try KVCache(config: try layer(gqa: false).config, batch: 1, capacity: 8)
        let before = cache
        assertThrows(AttentionError.invalidInput,
                     containing: ["cache config (dModel 48, nHeads 6, numKVHeads 6, sinks 3)",
                                  "must equal this layer's config (dModel 48, nHeads 6, numKVHeads 2, sinks 3)"]) {
            try model.forward(randomTensor([1, 2, 48], seed: 1), cache: &cache)
        }
        XCTAssertEqual(cache, before)
    }

    func testBatchMismatchThrows() throws {
        let model = try layer()
        var cache = try KVCache(config: model.config, batch: 2, capacity: 8)
        let before = cache
        assertThrows(AttentionError.invalidInput,
                     containing: ["x batch (3)", "must equal the cache's batch (2)"]) {
            try model.forward(randomTensor([3, 2, 48], seed: 1), cache: &cache)
        }
        XCTAssertEqual(cache, before)
    }

    func testFullCacheWithoutAWindowThrows() throws {
        let model = try layer()
        var cache = try KVCache(config: model.config, batch: 1, capacity: 5)
        _ = try model.forward(randomTensor([1, 4, 48], seed: 1), cache: &cache)
        let before = cache
        assertThrows(AttentionError.invalidInput,
                     containing: ["cache row 0", "holds 4 of 5 tokens", "cannot take 2 more"]) {
            try model.forward(randomTensor([1, 2, 48], seed: 2), cache: &cache)
        }
        XCTAssertEqual(cache, before)
        _ = try model.forward(randomTensor([1, 1, 48], seed: 3), cache: &cache)
        XCTAssertEqual(cache.lengths, [5])
    }

    func testBadLengthsThrow() throws {
        let model = try layer()
        var cache = try KVCache(config: model.config, batch: 2, capacity: 8)
        let before = cache
        let x = randomTensor([2, 3, 48], seed: 1)
        assertThrows(AttentionError.invalidInput, containing: ["lengths count (1)", "must equal batch (2)"]) {
            try model.forward(x, cache: &cache, lengths: [3])
        }
        for (lengths, bad) in [([3, 4], 1), ([-1, 3], 0)] {
            assertThrows(AttentionError.invalidInput,
                         containing: ["lengths[\(bad)] (\(lengths[bad]))", "must be in 0...3 (seq)"], "\(lengths)") {
                try model.forward(x, cache: &cache, lengths: lengths)
            }
        }
        XCTAssertEqual(cache, before)
        XCTAssertEqual(cache.lengths, [0, 0])
    }

    /// `sinks + cached + seq` must fit BLAS's 32-bit sizes; batch 0 keeps `x` empty.
    func testSequencePastTheBLASLimitWithTheCacheThrows() throws {
        let model = try layer()
        var cache = try KVCache(config: model.config, batch: 1, capacity: 8)
        let before = cache
        let n = AttentionLimits.maxDimension - 3 - 8 + 1
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["sinks + cached + seq (3 + 8 + \(n))", "must be <= \(AttentionLimits.maxDimension)"]) {
            try model.forward(try Tensor(shape: [0, n, 48], scalars: []), cache: &cache)
        }
        XCTAssertEqual(cache, before)
    }

    func testBadCacheSizesThrow() throws {
        let config = try layer().config
        for batch in [0, -1] {
            assertThrows(AttentionError.invalidInput, containing: ["KVCache batch", "(\(batch))", "must be >= 1"]) {
                try KVCache(config: config, batch: batch, capacity: 8)
            }
            assertThrows(AttentionError.invalidInput, containing: ["KVCache batch", "(\(batch))", "must be >= 1"]) {
                try KVCache(config: config, batch: batch, window: 4)
            }
        }
        assertThrows(AttentionError.invalidInput, containing: ["KVCache capacity", "(0)", "must be >= 1"]) {
            try KVCache(config: config, batch: 1, capacity: 0)
        }
        assertThrows(AttentionError.invalidInput, containing: ["KVCache window", "(0)", "must be >= 1"]) {
            try KVCache(config: config, batch: 1, window: 0)
        }
        let limit = AttentionLimits.maxDimension
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["KVCache capacity (\(Int.max))", "plus sinks (3)", "must be <= \(limit)"]) {
            try KVCache(config: config, batch: Int.max, capacity: Int.max)
        }
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["KVCache capacity (\(limit - 2))", "plus sinks (3)", "must be <= \(limit)"]) {
            try KVCache(config: config, batch: 1, capacity: limit - 2)
        }
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["KVCache window (\(Int.max))", "plus sinks (3)", "must be <= \(limit)"]) {
            try KVCache(config: config, batch: 1, window: Int.max)
        }
        // The storage count overflows Int before anything is allocated.
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["KVCache [batch, capacity, numKVHeads, headDim]",
                                  "shape [\(Int.max / 2), 1024, 2, 8]", "more elements than Int can count"]) {
            try KVCache(config: config, batch: Int.max / 2, capacity: 1024)
        }
    }
}
