import Attention
import AttentionCommandLine
import Foundation

/// Runs a ``Workload``: the sgemm rate first, then, per sequence length and thread count, the
/// chosen kernels side by side.
///
/// At each (N, threads) every kernel is warmed up, then the timed calls interleave the kernels
/// (flash, reference, reference, flash, …) so that a slow spell of a shared machine lands on
/// both, and the flash-vs-reference ratio compares like with like.
public struct BenchRunner {
    public var workload: Workload
    /// Receives one line per step (the command sends them to stderr).
    public var progress: (String) -> Void

    /// With `--backward --report-rss`: one more untimed training step per sequence length,
    /// measured for memory (``BackwardMemory``).
    public var reportsMemory: Bool

    public init(workload: Workload, reportsMemory: Bool = false, progress: @escaping (String) -> Void = { _ in }) {
        self.workload = workload
        self.reportsMemory = reportsMemory
        self.progress = progress
    }

    public func run() throws -> BenchReport {
        #if canImport(Glibc)
        if reportsMemory {
            // A fixed threshold: every large buffer is its own mapping, returned when freed, so
            // the resident set follows what is alive (glibc otherwise raises the threshold after
            // each free and keeps freed buffers of up to 32 MiB in its heap).
            _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD, malloc.h */, 128 * 1024)
        }
        #endif
        let machine = MachineInfo.current()
        let savedThreads = BLAS.threadCount
        defer { BLAS.threadCount = savedThreads }

        let sgemm = try measureSgemm()
        if workload.decode != nil {
            var decode: [DecodeResult] = []
            var memory: [MemoryReading] = []
            for n in workload.sequenceLengths {
                let (rows, reading) = try measureDecode(cacheLength: n)
                decode += rows
                memory.append(reading)
            }
            return BenchReport(machine: machine, workload: workload, sgemm: sgemm, results: [],
                               memory: memory, peakRssBytes: ResidentMemory.peakBytes(), decode: decode)
        }
        var results: [BenchResult] = []
        var memory: [MemoryReading] = []
        for n in workload.sequenceLengths {
            let (rows, reading) = try measure(sequenceLength: n, sgemm: sgemm)
            results += rows
            memory.append(reading)
        }
        return BenchReport(machine: machine, workload: workload, sgemm: sgemm, results: results,
                           memory: memory, peakRssBytes: ResidentMemory.peakBytes())
    }

    // MARK: sgemm rate

    /// `C = A·B`, square `sgemmSize`, at one thread and at every thread count of the workload.
    func measureSgemm() throws -> [SgemmRate] {
        let size = workload.sgemmSize
        guard size > 0 else { return [] }
        let a = uniformScalars(count: size * size, seed: 1)
        let b = uniformScalars(count: size * size, seed: 2)
        var c = [Float](repeating: 0, count: size * size)
        var rates: [SgemmRate] = []
        for threads in Set([1] + workload.threadCounts).sorted() {
            BLAS.threadCount = threads
            progress("sgemm \(size)³ at \(threads) thread\(threads == 1 ? "" : "s")")
            var samples: [Double] = []
            for repetition in 0..<12 {
                let seconds = try a.withUnsafeBufferPointer { a in
                    try b.withUnsafeBufferPointer { b in
                        try c.withUnsafeMutableBufferPointer { c in
                            try Self.time {
                                try BLAS.sgemm(m: size, n: size, k: size, a: a, lda: size,
                                               b: b, ldb: size, c: c, ldc: size)
                            }
                        }
                    }
                }
                if repetition >= 2 { samples.append(seconds) }   // two warm-up calls
            }
            let median = Self.median(samples)
            rates.append(SgemmRate(threads: threads, size: size, medianMs: median * 1000,
                                   gflops: 2 * pow(Double(size), 3) / median / 1e9))
        }
        return rates
    }

    // MARK: attention

    /// One call of the workload at a fixed sequence length, thread count and kernel.
    private struct Subject {
        let call: (BenchKernel, Int) throws -> Void
        /// With `--backward`: one training step, measured for memory instead of time.
        var backwardMemory: ((BenchKernel, Int) throws -> BackwardMemory)? = nil
    }

    private func makeSubject(sequenceLength n: Int) throws -> Subject {
        let w = workload
        switch w.mode {
        case .forward:
            let layer = try MultiHeadAttention(config: try w.attentionConfig(), seed: w.seed)
            let x = try Tensor(shape: [w.batch, n, w.dModel],
                               scalars: uniformScalars(count: w.batch * n * w.dModel, seed: w.seed &+ 1))
            if w.timesBackward {
                let dy = try Tensor(shape: x.shape, scalars: uniformScalars(count: x.count, seed: w.seed &+ 2))
                func step(_ kernel: BenchKernel, _ threads: Int, memory: Bool) throws -> BackwardMemory? {
                    var layer = layer
                    layer.kernelWorkerCount = threads
                    return try Self.trainingStep(measuresMemory: memory) {
                        try layer.forwardWithPullback(x, kernel: kernel.attentionKernel).pullback
                    } backward: { pullback in
                        let gradients = try pullback(dy)
                        return AttentionParameter.allCases.reduce(gradients.input.count) { $0 + (gradients[$1]?.count ?? 0) }
                    }
                }
                return Subject(call: { _ = try step($0, $1, memory: false) },
                               backwardMemory: { try step($0, $1, memory: true)! })
            }
            return Subject { kernel, threads in
                var layer = layer
                layer.kernelWorkerCount = threads
                _ = try layer.forward(x, mask: nil, training: false, dropoutSeed: 0,
                                      kernel: kernel.attentionKernel)
            }
        case .attentionOnly:
            let qCount = w.batch * n * w.heads * w.headDim, kvCount = w.batch * n * w.kvDim
            let q = try Tensor(shape: [w.batch, n, w.heads * w.headDim],
                               scalars: uniformScalars(count: qCount, seed: w.seed &+ 1))
            let k = try Tensor(shape: [w.batch, n, w.kvDim],
                               scalars: uniformScalars(count: kvCount, seed: w.seed &+ 2))
            let v = try Tensor(shape: [w.batch, n, w.kvDim],
                               scalars: uniformScalars(count: kvCount, seed: w.seed &+ 3))
            if w.timesBackward {
                let dOut = try Tensor(shape: q.shape, scalars: uniformScalars(count: qCount, seed: w.seed &+ 4))
                func step(_ kernel: BenchKernel, _ threads: Int, memory: Bool) throws -> BackwardMemory? {
                    try Self.trainingStep(measuresMemory: memory) {
                        try scaledDotProductAttentionWithPullback(
                            queries: q, keys: k, values: v, nHeads: w.heads, numKVHeads: w.kvHeads,
                            isCausal: w.causal, kernel: kernel.attentionKernel, workers: threads).pullback
                    } backward: { pullback in
                        let gradients = try pullback(dOut)
                        return gradients.queries.count + gradients.keys.count + gradients.values.count
                    }
                }
                return Subject(call: { _ = try step($0, $1, memory: false) },
                               backwardMemory: { try step($0, $1, memory: true)! })
            }
            return Subject { kernel, threads in
                _ = try scaledDotProductAttention(
                    queries: q, keys: k, values: v, nHeads: w.heads, numKVHeads: w.kvHeads,
                    isCausal: w.causal, kernel: kernel.attentionKernel, workers: threads)
            }
        }
    }

    private func measure(sequenceLength n: Int, sgemm: [SgemmRate]) throws -> ([BenchResult], MemoryReading) {
        let w = workload
        let subject = try makeSubject(sequenceLength: n)
        // Baseline: inputs and weights are allocated; hold and touch one output-sized buffer too,
        // so that the peak after the calls minus this baseline is what the calls needed beyond
        // inputs, weights and output.
        do {
            let outputCount = w.batch * n * (w.mode == .forward ? w.dModel : w.heads * w.headDim)
            Self.keep([Float](repeating: 1, count: outputCount))
        }
        let baseline = ResidentMemory.peakBytes()

        var medians: [BenchKernel: [Int: Double]] = [:]
        var rows: [BenchResult] = []
        for threads in w.threadCounts {
            BLAS.threadCount = threads
            for kernel in w.kernels {
                for call in 0..<w.warmup {
                    progress("N=\(n) threads=\(threads) \(kernel.rawValue): warm-up \(call + 1)/\(w.warmup)")
                    try subject.call(kernel, threads)
                }
            }
            var samples: [BenchKernel: [Double]] = [:]
            var spent = 0.0
            for iteration in 0..<w.iterations {
                progress("N=\(n) threads=\(threads): iteration \(iteration + 1)/\(w.iterations)")
                let order = iteration % 2 == 0 ? w.kernels : w.kernels.reversed()
                for kernel in order {
                    let seconds = try Self.time { try subject.call(kernel, threads) }
                    samples[kernel, default: []].append(seconds)
                    spent += seconds
                }
                if w.maxSeconds > 0, iteration + 1 >= 3, spent > w.maxSeconds { break }
            }
            let sgemmRate = sgemm.first { $0.threads == threads }?.gflops
            let gflop = w.flops(sequenceLength: n) / 1e9
            for kernel in w.kernels {
                let times = samples[kernel] ?? []
                let median = Self.median(times)
                medians[kernel, default: [:]][threads] = median
                let gflops = gflop / median
                rows.append(BenchResult(
                    mode: w.mode, kernel: kernel, batch: w.batch, seq: n, dModel: w.dModel,
                    heads: w.heads, kvHeads: w.kvHeads, headDim: w.headDim, sinks: w.sinks,
                    rope: w.rope, causal: w.causal, threads: threads, iterations: times.count,
                    medianMs: median * 1000, minMs: (times.min() ?? .nan) * 1000,
                    gflop: gflop, gflops: gflops, sgemmGflops: sgemmRate,
                    percentOfSgemm: sgemmRate.map { 100 * gflops / $0 },
                    speedupOverFewestThreads: 1, flashOverReference: nil))
            }
        }
        let peak = ResidentMemory.peakBytes()
        var reading = MemoryReading(seq: n, baselinePeakRssBytes: baseline, peakRssBytes: peak)
        if reportsMemory, let measure = subject.backwardMemory, let kernel = w.kernels.first {
            reading.backward = try measure(kernel, w.threadCounts.max()!)
        }

        // Ratios need every median of this sequence length.
        let fewest = w.threadCounts.min()!
        for index in rows.indices {
            let r = rows[index]
            let mine = medians[r.kernel]![r.threads]!
            rows[index].speedupOverFewestThreads = medians[r.kernel]![fewest]! / mine
            if let flash = medians[.flash]?[r.threads], let reference = medians[.reference]?[r.threads] {
                rows[index].flashOverReference = reference / flash
            }
        }
        return (rows, reading)
    }

    /// One forward (returning its pullback) and the pullback (returning the count of gradient
    /// elements). With `measuresMemory`, the resident memory the forward added, and the peak
    /// during the backward beyond that; `nil` otherwise.
    static func trainingStep<Pullback>(
        measuresMemory: Bool, forward: () throws -> Pullback, backward: (Pullback) throws -> Int
    ) throws -> BackwardMemory? {
        guard measuresMemory else {
            _ = try backward(try forward())
            return nil
        }
        let before = ResidentMemory.currentBytes()
        let pullback = try forward()
        let kept = ResidentMemory.currentBytes()
        ResidentMemory.resetPeak()
        let gradientElements = try backward(pullback)
        let peak = ResidentMemory.currentPeakBytes()
        return withExtendedLifetime(pullback) {
            BackwardMemory(forwardKeptBytes: kept - before, backwardPeakBytes: peak - kept,
                           gradientBytes: gradientElements * MemoryLayout<Float>.size)
        }
    }

    // MARK: decode

    /// The layer rows (`.forward` mode) and then the kernel rows at one cache length.
    private func measureDecode(cacheLength n: Int) throws -> ([DecodeResult], MemoryReading) {
        let w = workload
        let config = try w.attentionConfig()
        let cacheBytes = try KVCache(config: config, batch: w.batch, capacity: n).byteCount
        let cacheBytesWithoutGQA = try KVCache(config: try w.attentionConfigWithoutGQA(), batch: w.batch,
                                               capacity: n).byteCount
        let baseline = ResidentMemory.peakBytes()
        var rows: [DecodeResult] = []

        func row(_ mode: Workload.Mode, threads: Int, split: DecodeSplit, samples: [Double]) -> DecodeResult {
            let median = Self.median(samples)
            return DecodeResult(
                mode: mode, batch: w.batch, cacheLength: n, dModel: w.dModel, heads: w.heads,
                kvHeads: w.kvHeads, headDim: w.headDim, sinks: mode == .forward ? w.sinks : 0,
                rope: mode == .forward && w.rope, threads: threads, split: split,
                keyChunks: split == .split ? keyChunks(threads: threads) : nil,
                iterations: samples.count, medianMs: median * 1000, minMs: (samples.min() ?? .nan) * 1000,
                tokensPerSecond: Double(w.batch) / median, cacheBytes: cacheBytes,
                cacheBytesWithoutGqa: cacheBytesWithoutGQA)
        }

        if w.mode == .forward {
            let layer = try MultiHeadAttention(config: config, seed: w.seed)
            let prompt = try Tensor(shape: [w.batch, n, w.dModel],
                                    scalars: uniformScalars(count: w.batch * n * w.dModel, seed: w.seed &+ 1))
            let token = try Tensor(shape: [w.batch, 1, w.dModel],
                                   scalars: uniformScalars(count: w.batch * w.dModel, seed: w.seed &+ 4))
            for threads in w.threadCounts {
                BLAS.threadCount = threads
                // One layer and one freshly prefilled cache per split; each call appends a token
                // to its own cache in place (no copy: each cache has a single owner).
                var layers: [MultiHeadAttention] = []
                var caches: [KVCache] = []
                for split in DecodeSplit.allCases {
                    var configured = layer
                    configured.kernelWorkerCount = threads
                    configured.keySplit = keySplit(split, threads: threads)
                    progress("decode layer N=\(n) threads=\(threads) \(split.rawValue): prefill")
                    var cache = try KVCache(config: config, batch: w.batch,
                                            capacity: n + w.warmup + Self.maxExtraWarmupRounds + w.iterations + 1)
                    _ = try configured.forward(prompt, cache: &cache)
                    layers.append(configured)
                    caches.append(cache)
                }
                settleOpenBLASThreads()
                let samples = try interleaved(label: "decode layer N=\(n) threads=\(threads)") { split in
                    let index = DecodeSplit.allCases.firstIndex(of: split)!
                    return try layers[index].forward(token, cache: &caches[index])
                }
                for split in DecodeSplit.allCases {
                    rows.append(row(.forward, threads: threads, split: split, samples: samples[split]!))
                }
            }
        }

        let q = try Tensor(shape: [w.batch, 1, w.heads * w.headDim],
                           scalars: uniformScalars(count: w.batch * w.heads * w.headDim, seed: w.seed &+ 1))
        let k = try Tensor(shape: [w.batch, w.kvHeads, n, w.headDim],
                           scalars: uniformScalars(count: w.batch * n * w.kvDim, seed: w.seed &+ 2))
        let v = try Tensor(shape: [w.batch, w.kvHeads, n, w.headDim],
                           scalars: uniformScalars(count: w.batch * n * w.kvDim, seed: w.seed &+ 3))
        for threads in w.threadCounts {
            BLAS.threadCount = threads
            settleOpenBLASThreads()
            let samples = try interleaved(label: "decode kernel N=\(n) threads=\(threads)") { split in
                try scaledDotProductAttention(
                    queries: q, keys: k, values: v, nHeads: w.heads, numKVHeads: w.kvHeads,
                    isCausal: false, kernel: .flash, workers: threads,
                    keySplit: keySplit(split, threads: threads))
            }
            for split in DecodeSplit.allCases {
                rows.append(row(.attentionOnly, threads: threads, split: split, samples: samples[split]!))
            }
        }
        return (rows, MemoryReading(seq: n, baselinePeakRssBytes: baseline, peakRssBytes: ResidentMemory.peakBytes()))
    }

    /// Minimum warm-up time of a decode row. After ``settleOpenBLASThreads()`` the kernel's
    /// helper threads have parked; a woken helper is often queued on the calling thread's
    /// core, and the scheduler can take tens of milliseconds to move it to the idle one
    /// (measured: at N = 1024 on 2 threads, 5 warm-up calls left 6 of 8 processes at the
    /// one-thread speed, 0.1 s of warm-up 1 of 8). A decoding loop pays this once per burst.
    static let decodeWarmupSeconds = 0.1

    /// At most this many extra warm-up calls per split, so that a layer row's linear cache
    /// (which grows by one token per call) has a bounded capacity.
    static let maxExtraWarmupRounds = 1000

    /// Waits out the spin of OpenBLAS's pool threads after a multi-threaded call (the prefill's
    /// sgemms, the sgemm-rate measurement, library start-up): they poll for 2²⁸ cycles, about
    /// 0.07 s at 3.7 GHz, before sleeping, and until then they compete with the kernel's workers
    /// for the cores. A decoding loop makes no multi-threaded OpenBLAS call (projections of up
    /// to 4 tokens run on the kernel's workers), so steady decoding runs without them.
    private func settleOpenBLASThreads() {
        Thread.sleep(forTimeInterval: 0.2)
    }

    private func keyChunks(threads: Int) -> Int {
        (workload.decode?.keyChunksPerThread ?? 4) * threads
    }

    private func keySplit(_ split: DecodeSplit, threads: Int) -> KeySplit {
        split == .split ? .chunks(keyChunks(threads: threads)) : .never
    }

    /// Warm-up calls (``Workload/warmup`` per split, and more until ``decodeWarmupSeconds``
    /// have passed), then ``Workload/iterations`` timed rounds of one call per split, the
    /// splits alternating in order (unsplit, split, split, unsplit, …).
    private func interleaved(label: String, _ call: (DecodeSplit) throws -> Tensor) throws -> [DecodeSplit: [Double]] {
        let w = workload
        let warmupStart = ContinuousClock.now
        for split in DecodeSplit.allCases {
            for _ in 0..<w.warmup { _ = try call(split) }
        }
        var extraRounds = 0
        while ContinuousClock.now - warmupStart < .seconds(Self.decodeWarmupSeconds),
              extraRounds < Self.maxExtraWarmupRounds {
            for split in DecodeSplit.allCases { _ = try call(split) }
            extraRounds += 1
        }
        var samples: [DecodeSplit: [Double]] = [:]
        progress("\(label): \(w.iterations) timed calls per split")
        for iteration in 0..<w.iterations {
            let order = iteration % 2 == 0 ? DecodeSplit.allCases : DecodeSplit.allCases.reversed()
            for split in order {
                samples[split, default: []].append(try Self.time { _ = try call(split) })
            }
        }
        return samples
    }

    // MARK: helpers

    static func time(_ body: () throws -> Void) rethrows -> Double {
        let start = ContinuousClock.now
        try body()
        let elapsed = ContinuousClock.now - start
        let (seconds, attoseconds) = elapsed.components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }

    /// Holds `scalars` until it returns, so the optimiser cannot drop the allocation.
    @_optimize(none)
    static func keep(_ scalars: [Float]) {}

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

}

#if canImport(Glibc)
/// glibc's `mallopt` (malloc.h, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
