import ArgumentParser
import Attention
import AttentionCommandLine
import Foundation

/// `attention-bench`: times `MultiHeadAttention.forward` (or the attention kernel alone) at
/// each OpenBLAS thread count, flash and reference side by side.
public struct AttentionBenchCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "attention-bench",
        abstract: "Times multi-head attention on the CPU at each OpenBLAS thread count, flash and reference kernels side by side.",
        discussion: """
        With no arguments: dModel 768, 12 heads, GQA with 4 key/value heads (D = 64), RoPE, \
        4 sinks, causal, batch 1, seq 256, 512, 1024, 2048 and 4096, threads 1 ... all \
        processors, both kernels; per seq and thread count, 1 warm-up call per kernel, then \
        the median of 10 timed calls (fewer, but at least 3, once they pass --max-seconds).

        First the sgemm rate (C = A·B, square --sgemm-size) is measured at 1 thread and at \
        every thread count tested. Then, for each seq and each thread count t, the layer runs \
        on t workers (kernelWorkerCount = t: projections and both kernels, each calling \
        OpenBLAS on one thread) and OpenBLAS's own pool has t threads (BLAS.threadCount = t, \
        used by the sgemm-rate measurement, not by the layer). The kernels' timed calls are \
        interleaved so a slow spell of a shared machine lands on both; --kernel flash times \
        the flash kernel alone, with its data still in cache from its previous call.

        GF/s is flops / median time, counting a multiply and an add as 2 flops:
          attention   = 4·B·H·D·V, with V visible scores per (batch, head):
                        V = N·S + N², or N·S + N(N+1)/2 when causal
          projections = 2·B·N·dModel·(2·dModel + 2·kvDim) + 2·S·dModel·2·kvDim
                        (kvDim = Hkv·D; the sinks are projected once per call)
        The full forward counts both; --attention-only counts attention with S = 0. RoPE, \
        masking and softmax are not counted. "% sgemm" is GF/s over the sgemm rate at the same \
        thread count; "speed-up" is over the fewest threads tested; "flash vs ref" is the \
        reference kernel's median time over the flash kernel's.

        Memory: the report gives the peak RSS (getrusage). With --report-rss it also gives, \
        per seq, the peak RSS after allocating inputs, weights and one output (the baseline) \
        and after the calls; the difference is what the calls needed beyond those. Measure \
        that with one --seq and one --kernel per process. With --backward --report-rss, one \
        more untimed call measures the backward alone: the resident memory the forward's kept \
        state added, then the peak during the pullback beyond it (peak reset through \
        /proc/self/clear_refs), and of that peak the bytes of the gradients returned; the \
        rest is the backward's working memory.

        --backward times a training step instead: the forward that keeps what its backward \
        needs, then the backward of a fixed random dy (the layer's forwardWithPullback and \
        pullback; with --attention-only, scaledDotProductAttentionWithPullback and its \
        pullback). Attention counts 4·B·H·D·V forward plus 10·B·H·D·V backward (dV, dP, dQ, \
        dK and the recomputed Q·Kᵀ); the projections count 3× (forward, weights' and inputs' \
        gradients).

        --decode times decoding instead: one new token per call against a KV cache of N \
        tokens, N from --seq (default 1024 and 4096), at each thread count, with the flash \
        kernel's key split off (KeySplit.never, "unsplit") and on (KeySplit.chunks(4·threads), \
        "split": 4 key chunks per worker, so that the chunks balance over the workers). Layer \
        rows: per (N, threads, split), a linear KVCache is prefilled with N tokens by \
        MultiHeadAttention.forward(_:cache:), then each call is forward(token, cache: &cache), \
        which appends its token (so the timed calls see N plus the warm-up calls and up to \
        iterations − 1 more cached tokens); the two splits' calls are interleaved, \
        each on its own cache. Kernel rows: scaledDotProductAttention with one query \
        [B, 1, H·D] against [B, Hkv, N, D] keys and values (head-major: the layout of a KVCache \
        and of a PyTorch cache), not causal. Each row gives the median \
        ms per call (one token per batch row), tokens/s, and the bytes of a KVCache holding N \
        tokens (KVCache.byteCount), with GQA and with Hkv = H. --decode --attention-only gives \
        the kernel rows alone. Defaults with --decode: 50 timed calls after 5 warm-up, the \
        warm-up extended to at least 0.1 s (after a 0.2 s pause for OpenBLAS's threads to go \
        idle, so that the kernel's helper threads have settled on their cores); no \
        --max-seconds cap; the flash kernel only.

        The environment matters: OPENBLAS_CORETYPE chooses OpenBLAS's compute kernel (the \
        report prints the one in use) and OPENBLAS_NUM_THREADS only sets the starting thread \
        count, which --threads overrides.
        """)

    @Option(name: .customLong("d-model"), help: "Model width dModel.")
    public var dModel = 768

    @Option(help: "Query heads H; must divide dModel.")
    public var heads = 12

    @Option(name: .customLong("kv-heads"), help: "Key/value heads Hkv (GQA when < heads); must divide heads.")
    public var kvHeads = 4

    @Option(help: ArgumentHelp("Sequence lengths N, comma-separated (default 256,512,1024,2048,4096); with --decode, cache lengths (default 1024,4096).",
                               valueName: "n,n,..."))
    public var seq: IntList?

    @Option(help: "Batch size B.")
    public var batch = 1

    @Option(help: "Attention-sink tokens S (default 4; 0 without sinks). Not with --attention-only.")
    public var sinks: Int?

    @Flag(inversion: .prefixedNo, help: "Causal masking (token i sees tokens 0...i and every sink).")
    public var causal = true

    @Flag(inversion: .prefixedNo, help: "Rotary position embeddings (default on). Not with --attention-only.")
    public var rope: Bool?

    @Option(help: ArgumentHelp("OpenBLAS thread counts = flash worker counts, comma-separated (default 1 ... processors).",
                               valueName: "t,t,..."))
    public var threads: IntList?

    @Option(help: "Timed calls per seq, thread count and kernel; the median is reported (default 10; --decode: 50).")
    public var iterations: Int?

    @Option(help: "Untimed warm-up calls per seq, thread count and kernel (default 1; --decode: 5).")
    public var warmup: Int?

    @Option(name: .customLong("max-seconds"),
            help: "Per seq and thread count, stop timing after 3 rounds once the timed calls took this long; 0: no limit.")
    public var maxSeconds: Double = 6

    @Option(help: "flash, reference or both.")
    public var kernel = KernelChoice.both

    @Flag(name: .customLong("attention-only"),
          help: "Time scaledDotProductAttention alone on [B, N, H·D] inputs: no projections, RoPE or sinks.")
    public var attentionOnly = false

    @Flag(help: "Time decoding: one token per call against a KV cache of each --seq length, key split off and on (see below); with --attention-only, the kernel rows alone.")
    public var decode = false

    @Flag(help: "Time training steps: each call is the layer's forwardWithPullback and its pullback of a fixed dy (flops: 4·B·H·D·V forward + 10·B·H·D·V backward for attention, 3× the projections); with --attention-only, scaledDotProductAttentionWithPullback and its pullback.")
    public var backward = false

    @Option(help: "table, csv or json.")
    public var format = OutputFormat.table

    @Option(help: ArgumentHelp("Write the report in --format to this file; the table then goes to stdout.",
                               valueName: "file"))
    public var output: String?

    @Option(name: .customLong("sgemm-size"), help: "Size of the square sgemm whose rate is measured; 0 skips it.")
    public var sgemmSize = 1024

    @Flag(name: .customLong("report-rss"),
          help: "Report peak RSS before and after the calls of each seq (needs one --seq and one --kernel).")
    public var reportRSS = false

    @Flag(help: "No progress lines on stderr.")
    public var quiet = false

    public init() {}

    public mutating func validate() throws {
        func positive(_ value: Int, _ name: String) throws {
            guard value > 0 else { throw ValidationError("--\(name) (\(value)) must be > 0") }
        }
        try positive(dModel, "d-model")
        try positive(heads, "heads")
        try positive(kvHeads, "kv-heads")
        try positive(batch, "batch")
        if let iterations { try positive(iterations, "iterations") }
        guard dModel % heads == 0 else {
            throw ValidationError("--heads (\(heads)) must divide --d-model (\(dModel))")
        }
        guard heads % kvHeads == 0 else {
            throw ValidationError("--kv-heads (\(kvHeads)) must divide --heads (\(heads))")
        }
        if let warmup, warmup < 0 { throw ValidationError("--warmup (\(warmup)) must be >= 0") }
        guard maxSeconds >= 0, maxSeconds.isFinite else {
            throw ValidationError("--max-seconds (\(maxSeconds)) must be finite and >= 0")
        }
        guard sgemmSize >= 0 else { throw ValidationError("--sgemm-size (\(sgemmSize)) must be >= 0") }
        if let sinks, sinks < 0 { throw ValidationError("--sinks (\(sinks)) must be >= 0") }
        for (name, list) in [("seq", seq ?? IntList([1])), ("threads", threads ?? IntList([1]))] {
            if let bad = list.values.first(where: { $0 <= 0 }) {
                throw ValidationError("--\(name) values must be > 0; got \(bad)")
            }
            guard Set(list.values).count == list.values.count else {
                throw ValidationError("--\(name) lists a value twice: \(list)")
            }
        }
        if attentionOnly {
            if let sinks, sinks > 0 {
                throw ValidationError("--sinks (\(sinks)) needs the full forward; --attention-only has no sinks")
            }
            if rope == true {
                throw ValidationError("--rope needs the full forward; --attention-only has no RoPE")
            }
        } else if rope ?? true, (dModel / heads) % 2 != 0 {
            throw ValidationError("head dim (--d-model / --heads = \(dModel / heads)) must be even with RoPE; pass --no-rope")
        }
        if backward, decode {
            throw ValidationError("--backward times a forward and its backward over a whole sequence; --decode does not apply")
        }
        if decode, kernel == .reference {
            throw ValidationError("--decode times the flash kernel (the key split is the flash kernel's); --kernel reference does not apply")
        }
        if reportRSS, !decode, workload.sequenceLengths.count != 1 || kernel == .both {
            throw ValidationError("--report-rss needs one --seq and one --kernel (flash or reference), so the peak belongs to one call")
        }
        let workload = self.workload
        if reportRSS, decode, workload.sequenceLengths.count != 1 {
            throw ValidationError("--report-rss needs one --seq, so the peak belongs to one cache length")
        }
        if workload.kernels.contains(.reference) {
            let needed = workload.sequenceLengths.map { workload.referenceScoreBytes(sequenceLength: $0) }.max() ?? 0
            let physical = Double(ProcessInfo.processInfo.physicalMemory)
            if needed > physical / 2 {
                throw ValidationError(String(
                    format: "the reference kernel needs %.1f GiB for one [N, S+N] score matrix, over half of this machine's %.1f GiB; use --kernel flash",
                    needed / 1_073_741_824, physical / 1_073_741_824))
            }
        }
    }

    /// The options as a ``Workload``.
    public var workload: Workload {
        Workload(
            mode: attentionOnly ? .attentionOnly : .forward,
            batch: batch, dModel: dModel, heads: heads, kvHeads: kvHeads,
            sinks: attentionOnly ? 0 : (sinks ?? 4),
            rope: attentionOnly ? false : (rope ?? true),
            causal: causal,
            sequenceLengths: seq?.values ?? (decode ? [1024, 4096] : [256, 512, 1024, 2048, 4096]),
            threadCounts: threads?.values ?? Array(1...ProcessInfo.processInfo.activeProcessorCount),
            kernels: decode ? [.flash] : kernel.kernels,
            iterations: iterations ?? (decode ? 50 : 10), warmup: warmup ?? (decode ? 5 : 1),
            maxSeconds: decode ? 0 : maxSeconds, sgemmSize: sgemmSize, seed: 42,
            decode: decode ? DecodeSettings(keyChunksPerThread: 4) : nil, backward: backward ? true : nil)
    }

    public mutating func run() throws {
        let quiet = self.quiet
        let runner = BenchRunner(workload: workload, reportsMemory: reportRSS && backward) { line in
            if !quiet { FileHandle.standardError.write(Data("attention-bench: \(line)\n".utf8)) }
        }
        let report = try runner.run()
        let text = try report.rendered(as: format, reportRSS: reportRSS)
        if let output {
            do {
                try text.write(toFile: output, atomically: true, encoding: .utf8)
            } catch {
                throw ValidationError("cannot write --output \(output): \(error.localizedDescription)")
            }
            if !quiet { FileHandle.standardError.write(Data("attention-bench: wrote \(output)\n".utf8)) }
            print(report.table(reportRSS: reportRSS), terminator: "")
        } else {
            print(text, terminator: "")
        }
    }

    /// Parses `arguments` (without the program name), runs, and returns the exit status.
    ///
    /// Bad arguments and failures print one line, `attention-bench: error: …`, on stderr and
    /// return non-zero (64 for usage errors); `--help` prints the help and returns 0.
    public static func main(arguments: [String]) -> Int32 {
        exitStatus(name: "attention-bench", arguments: arguments)
    }
}

/// Which kernels to run.
public enum KernelChoice: String, Sendable, CaseIterable, ExpressibleByArgument {
    case flash, reference, both

    var kernels: [BenchKernel] {
        switch self {
        case .flash: return [.flash]
        case .reference: return [.reference]
        case .both: return [.flash, .reference]
        }
    }
}

extension OutputFormat: ExpressibleByArgument {}

/// A comma-separated list of integers, e.g. `256,512,1024`.
public struct IntList: Sendable, Equatable, ExpressibleByArgument, CustomStringConvertible {
    public var values: [Int]

    public init(_ values: [Int]) { self.values = values }

    public init?(argument: String) {
        let parts = argument.split(separator: ",", omittingEmptySubsequences: false)
        var values: [Int] = []
        for part in parts {
            guard let value = Int(part.trimmingCharacters(in: .whitespaces)) else { return nil }
            values.append(value)
        }
        guard !values.isEmpty else { return nil }
        self.values = values
    }

    public var description: String { values.map(String.init).joined(separator: ",") }
    public var defaultValueDescription: String { description }
}
