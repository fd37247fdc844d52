import Foundation

/// The measured sgemm rate at one thread count: `C = A·B` with square `size × size` matrices.
public struct SgemmRate: Sendable, Codable, Equatable {
    public var threads: Int
    public var size: Int
    public var medianMs: Double
    /// `2·size³ / median time`, in 10⁹ flop/s.
    public var gflops: Double
}

/// One (sequence length, thread count, kernel) measurement.
public struct BenchResult: Sendable, Codable, Equatable {
    public var mode: Workload.Mode
    public var kernel: BenchKernel
    public var batch: Int
    public var seq: Int
    public var dModel: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var sinks: Int
    public var rope: Bool
    public var causal: Bool
    /// OpenBLAS threads, and the flash kernel's worker count.
    public var threads: Int
    public var iterations: Int
    public var medianMs: Double
    public var minMs: Double
    /// Flop count of one call (``Workload/flops(sequenceLength:)``), in 10⁹.
    public var gflop: Double
    /// `gflop / median time`.
    public var gflops: Double
    /// The sgemm rate measured at the same thread count, or `nil` when it was skipped.
    public var sgemmGflops: Double?
    /// `100 · gflops / sgemmGflops`.
    public var percentOfSgemm: Double?
    /// Median time at the fewest threads tested (same N and kernel) over this median.
    public var speedupOverFewestThreads: Double
    /// Reference median over flash median at the same N and threads (`nil` unless both ran).
    public var flashOverReference: Double?
}

/// Whether a decode row's flash kernel split the keys of each (batch row, head) across workers.
public enum DecodeSplit: String, Sendable, Codable, CaseIterable {
    /// `KeySplit.never`: one work item per (batch row, key/value head).
    case unsplit
    /// `KeySplit.chunks(keyChunksPerThread · threads)`, merged afterwards.
    case split
}

/// One (cache length, thread count, key split) decode measurement (``DecodeSettings``).
public struct DecodeResult: Sendable, Codable, Equatable {
    /// `.forward`: `MultiHeadAttention.forward` of one token against a `KVCache` ("layer");
    /// `.attentionOnly`: `scaledDotProductAttention` of one query against the keys ("kernel").
    public var mode: Workload.Mode
    public var batch: Int
    /// Cached tokens `N` per batch row before the first (warm-up) call.
    public var cacheLength: Int
    public var dModel: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    /// Sinks of the layer (0 for kernel rows).
    public var sinks: Int
    public var rope: Bool
    /// OpenBLAS threads, and the flash kernel's worker count.
    public var threads: Int
    public var split: DecodeSplit
    /// Key chunks per (batch row, head): `nil` when unsplit.
    public var keyChunks: Int?
    public var iterations: Int
    /// Median time of one call: one token per batch row.
    public var medianMs: Double
    public var minMs: Double
    /// `batch / median time`.
    public var tokensPerSecond: Double
    /// `KVCache.byteCount` of a cache of this layer holding `N` tokens per batch row (keys and
    /// values of the `kvHeads` heads; sinks are not stored).
    public var cacheBytes: Int
    /// The same with `kvHeads = heads`: the cache this layer would need without GQA.
    public var cacheBytesWithoutGqa: Int
}

/// Resident memory around one sequence length's measurements.
public struct MemoryReading: Sendable, Codable, Equatable {
    public var seq: Int
    /// Peak RSS after allocating the inputs, weights and one output-sized buffer, before the
    /// first call.
    public var baselinePeakRssBytes: Int
    /// Peak RSS after every call at this sequence length.
    public var peakRssBytes: Int
    /// `peakRssBytes − baselinePeakRssBytes`: memory the calls needed beyond inputs, weights
    /// and output. Meaningful when the process measures one sequence length and one kernel.
    public var extraBytes: Int { peakRssBytes - baselinePeakRssBytes }
    /// With `--backward --report-rss`: one untimed training step's memory, split at the pullback.
    public var backward: BackwardMemory? = nil
}

/// The memory of one forward-with-pullback and its pullback (`--backward --report-rss`).
public struct BackwardMemory: Sendable, Codable, Equatable {
    /// Resident memory the forward added, its output and what it kept for the backward.
    public var forwardKeptBytes: Int
    /// Peak resident memory during the pullback beyond what was resident when it started:
    /// what the backward needs beyond what the forward kept.
    public var backwardPeakBytes: Int
    /// Of that, the gradients the pullback returns.
    public var gradientBytes: Int
    /// `backwardPeakBytes − gradientBytes`: the backward's working memory.
    public var workingBytes: Int { backwardPeakBytes - gradientBytes }
}

/// Everything one run measured.
public struct BenchReport: Sendable, Codable, Equatable {
    public var machine: MachineInfo
    public var workload: Workload
    public var sgemm: [SgemmRate]
    public var results: [BenchResult]
    public var memory: [MemoryReading]
    /// Peak RSS of the whole run.
    public var peakRssBytes: Int
    /// The decode rows of a `--decode` run (then ``results`` is empty); `nil` otherwise, and
    /// then absent from the JSON.
    public var decode: [DecodeResult]? = nil
}

/// The output formats of `attention-bench --format`.
public enum OutputFormat: String, Sendable, CaseIterable {
    case table, csv, json
}

extension BenchReport {
    public func rendered(as format: OutputFormat, reportRSS: Bool = false) throws -> String {
        switch format {
        case .table: return table(reportRSS: reportRSS)
        case .csv: return csv()
        case .json: return try json()
        }
    }

    /// Column names of ``csv()``, in order.
    public static let csvColumns = [
        "mode", "kernel", "batch", "seq", "d_model", "heads", "kv_heads", "head_dim", "sinks",
        "rope", "causal", "threads", "iterations", "median_ms", "min_ms", "gflop", "gflops",
        "sgemm_gflops", "pct_of_sgemm", "speedup_over_fewest_threads", "flash_over_reference",
        "openblas_core", "cpu_level",
    ]

    /// Column names of ``csv()`` for a `--decode` run, in order.
    public static let decodeCsvColumns = [
        "mode", "batch", "cache_length", "d_model", "heads", "kv_heads", "head_dim", "sinks",
        "rope", "threads", "split", "key_chunks", "iterations", "median_ms", "min_ms",
        "tokens_per_second", "cache_bytes", "cache_bytes_without_gqa", "openblas_core", "cpu_level",
    ]

    /// One header line, then one line per result; empty fields where a value does not apply.
    /// A `--decode` run has the ``decodeCsvColumns`` instead of the ``csvColumns``.
    public func csv() -> String {
        func number(_ value: Double?, _ digits: Int) -> String {
            value.map { String(format: "%.\(digits)f", $0) } ?? ""
        }
        if let decode {
            var lines = [Self.decodeCsvColumns.joined(separator: ",")]
            for r in decode {
                let fields: [String] = [
                    r.mode.rawValue, "\(r.batch)", "\(r.cacheLength)", "\(r.dModel)", "\(r.heads)",
                    "\(r.kvHeads)", "\(r.headDim)", "\(r.sinks)", "\(r.rope)", "\(r.threads)",
                    r.split.rawValue, r.keyChunks.map(String.init) ?? "", "\(r.iterations)",
                    number(r.medianMs, 4), number(r.minMs, 4), number(r.tokensPerSecond, 1),
                    "\(r.cacheBytes)", "\(r.cacheBytesWithoutGqa)", machine.openblasCore, machine.cpuLevel,
                ]
                lines.append(fields.joined(separator: ","))
            }
            return lines.joined(separator: "\n") + "\n"
        }
        var lines = [Self.csvColumns.joined(separator: ",")]
        for r in results {
            let fields: [String] = [
                r.mode.rawValue, r.kernel.rawValue, "\(r.batch)", "\(r.seq)", "\(r.dModel)",
                "\(r.heads)", "\(r.kvHeads)", "\(r.headDim)", "\(r.sinks)", "\(r.rope)",
                "\(r.causal)", "\(r.threads)", "\(r.iterations)", number(r.medianMs, 4),
                number(r.minMs, 4), number(r.gflop, 6), number(r.gflops, 3),
                number(r.sgemmGflops, 3), number(r.percentOfSgemm, 2),
                number(r.speedupOverFewestThreads, 4), number(r.flashOverReference, 4),
                machine.openblasCore, machine.cpuLevel,
            ]
            lines.append(fields.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The whole report, snake_case keys, sorted, pretty-printed.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    public static func decode(json: String) throws -> BenchReport {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(BenchReport.self, from: Data(json.utf8))
    }

    /// A human-readable summary: machine, sgemm rates, one row per measurement, memory.
    public func table(reportRSS: Bool = false) -> String {
        if let decode { return decodeTable(decode, reportRSS: reportRSS) }
        let w = workload
        var out: [String] = []
        let what = w.timesBackward
            ? (w.mode == .forward
                ? "MultiHeadAttention.forwardWithPullback + pullback (forward and backward of the whole layer)"
                : "scaledDotProductAttentionWithPullback + pullback (forward and backward of the attention kernel alone)")
            : w.mode == .forward
            ? "MultiHeadAttention.forward (projections + RoPE + sinks + attention)"
            : "scaledDotProductAttention (attention kernel alone)"
        out.append("attention-bench: \(what)")
        var shape = "B=\(w.batch) dModel=\(w.dModel) H=\(w.heads) Hkv=\(w.kvHeads) D=\(w.headDim)"
        if w.mode == .forward { shape += " sinks=\(w.sinks) RoPE=\(w.rope ? "on" : "off")" }
        shape += " \(w.causal ? "causal" : "not causal")"
        let cap = w.maxSeconds > 0 && w.iterations > 3
            ? String(format: " (fewer, but at least 3, once past %g s)", w.maxSeconds) : ""
        shape += "; median of \(w.iterations) calls\(cap) after \(w.warmup) warm-up"
        out.append("  workload: \(shape)")
        out += machineLines()
        out.append("")

        let header = ["seq", "threads", "kernel", "calls", "median ms", "min ms", "GF/s", "% sgemm", "speed-up", "flash vs ref"]
        var rows: [[String]] = []
        for r in results {
            rows.append([
                "\(r.seq)", "\(r.threads)", r.kernel.rawValue, "\(r.iterations)",
                String(format: "%.3f", r.medianMs), String(format: "%.3f", r.minMs),
                String(format: "%.1f", r.gflops),
                r.percentOfSgemm.map { String(format: "%.0f %%", $0) } ?? "-",
                String(format: "%.2f×", r.speedupOverFewestThreads),
                r.flashOverReference.map { String(format: "%.2f×", $0) } ?? "-",
            ])
        }
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 2 ? cell + pad : pad + cell   // kernel left-aligned
            }.joined(separator: "  ")
        }
        out.append(line(header))
        out.append(line(widths.map { String(repeating: "-", count: $0) }))
        var previousSeq: Int?
        for (r, row) in zip(results, rows) {
            if let previousSeq, previousSeq != r.seq { out.append("") }
            previousSeq = r.seq
            out.append(line(row))
        }
        out.append("")
        let fewest = w.threadCounts.min() ?? 1
        let counted = w.timesBackward
            ? (w.mode == .forward ? "3 × projections + " : "") + "(4 + 10)·B·H·D·(visible scores)"
            : (w.mode == .forward ? "projections + " : "") + "4·B·H·D·(visible scores)"
        out.append("GF/s counts \(counted) flops (see --help); "
                   + "speed-up is over \(fewest) thread\(fewest == 1 ? "" : "s"); flash vs ref = reference time / flash time.")
        out += memoryLines(what: "seq", baselineNote: " (inputs, weights, output allocated)", reportRSS: reportRSS)
        return out.joined(separator: "\n") + "\n"
    }

    /// The `--report-rss` readings, if asked for, and the process's peak RSS.
    func memoryLines(what: String, baselineNote: String, reportRSS: Bool) -> [String] {
        var out: [String] = []
        if reportRSS {
            for reading in memory {
                out.append(String(format: "RSS at %@ %d: baseline %.1f MiB%@, peak %.1f MiB, extra %.1f MiB",
                                  what, reading.seq, mebibytes(reading.baselinePeakRssBytes), baselineNote,
                                  mebibytes(reading.peakRssBytes), mebibytes(reading.extraBytes)))
                if let backward = reading.backward {
                    out.append(String(
                        format: "  one training step at %@ %d: the forward kept %.1f MiB; the backward peaked %.1f MiB beyond that, of which %.1f MiB are the gradients returned and %.1f MiB working memory",
                        what, reading.seq, mebibytes(backward.forwardKeptBytes), mebibytes(backward.backwardPeakBytes),
                        mebibytes(backward.gradientBytes), mebibytes(backward.workingBytes)))
                }
            }
        }
        out.append(String(format: "peak RSS: %.1f MiB", mebibytes(peakRssBytes)))
        return out
    }

    /// CPU, OpenBLAS and sgemm lines under the title of both tables.
    func machineLines() -> [String] {
        let m = machine
        var out: [String] = []
        out.append("  CPU:      \(m.cpuModel), \(m.activeProcessors) processors (OpenBLAS sees \(m.openblasProcessors)); benchmark built \(m.buildConfiguration)")
        out.append("  Kernels:  CPU level \(m.cpuLevel) (supported: \(m.cpuLevelSupported); ATTENTION_CPU_LEVEL=\(m.cpuLevelVariable ?? "(unset)"))")
        out.append("  OpenBLAS: \(m.openblasVersion), core \(m.openblasCore), \(m.openblasThreading) build (\(m.openblasLibrary))")
        out.append("            config \"\(m.openblasConfiguration)\"; OPENBLAS_CORETYPE=\(m.openblasCoretypeVariable ?? "(unset)") OPENBLAS_NUM_THREADS=\(m.openblasNumThreadsVariable ?? "(unset)")")
        if !sgemm.isEmpty {
            let rates = sgemm.map { "\($0.threads) thread\($0.threads == 1 ? "" : "s") \(String(format: "%.1f", $0.gflops)) GF/s" }
            out.append("  sgemm \(sgemm[0].size)³: " + rates.joined(separator: ", "))
        }
        return out
    }

    /// The table of a `--decode` run: one row per (layer or kernel, cache length, threads, split).
    func decodeTable(_ decode: [DecodeResult], reportRSS: Bool) -> String {
        let w = workload
        let chunksPerThread = w.decode?.keyChunksPerThread ?? 4
        var out: [String] = []
        out.append("attention-bench --decode: one token per call against N cached tokens (flash kernel)")
        var shape = "B=\(w.batch) dModel=\(w.dModel) H=\(w.heads) Hkv=\(w.kvHeads) D=\(w.headDim)"
        if w.mode == .forward { shape += " sinks=\(w.sinks) RoPE=\(w.rope ? "on" : "off")" }
        shape += "; median of \(w.iterations) calls after \(w.warmup) warm-up"
        out.append("  workload: \(shape)")
        out += machineLines()
        out.append("")

        let header = ["what", "cache N", "threads", "split", "calls", "median ms", "min ms", "tokens/s",
                      "vs unsplit", "cache MiB", "no-GQA MiB"]
        func unsplitMedian(_ r: DecodeResult) -> Double? {
            decode.first {
                $0.mode == r.mode && $0.cacheLength == r.cacheLength && $0.threads == r.threads && $0.split == .unsplit
            }?.medianMs
        }
        let rows: [[String]] = decode.map { r in
            [
                r.mode == .forward ? "layer" : "kernel", "\(r.cacheLength)", "\(r.threads)",
                r.keyChunks.map { "\(r.split.rawValue) (\($0))" } ?? r.split.rawValue, "\(r.iterations)",
                String(format: "%.4f", r.medianMs), String(format: "%.4f", r.minMs),
                String(format: "%.0f", r.tokensPerSecond),
                unsplitMedian(r).map { String(format: "%.2f×", $0 / r.medianMs) } ?? "-",
                String(format: "%.2f", mebibytes(r.cacheBytes)),
                String(format: "%.2f", mebibytes(r.cacheBytesWithoutGqa)),
            ]
        }
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { $0[column] }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return column == 0 || column == 3 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        out.append(line(header))
        out.append(line(widths.map { String(repeating: "-", count: $0) }))
        var previous: (Workload.Mode, Int)?
        for (r, row) in zip(decode, rows) {
            if let previous, previous != (r.mode, r.cacheLength) { out.append("") }
            previous = (r.mode, r.cacheLength)
            out.append(line(row))
        }
        out.append("")
        if w.mode == .forward {
            out.append("layer:  MultiHeadAttention.forward(token, cache: &cache) on a linear KVCache prefilled with N tokens;")
            out.append("        each call appends its token, so the calls see N + \(w.warmup) ... N + \(w.warmup + w.iterations - 1) cached tokens.")
        }
        out.append("kernel: scaledDotProductAttention, one query [B, 1, H·D] against [B, Hkv, N, D] keys and values, not causal.")
        out.append("split (c) = KeySplit.chunks(c), c = \(chunksPerThread)·threads key chunks per (batch row, head); unsplit = KeySplit.never;")
        out.append("vs unsplit = unsplit median / this median; cache MiB = KVCache.byteCount for N tokens, no-GQA with Hkv = H.")
        out += memoryLines(what: "cache length", baselineNote: "", reportRSS: reportRSS)
        return out.joined(separator: "\n") + "\n"
    }
}

func mebibytes(_ bytes: Int) -> Double { Double(bytes) / 1_048_576 }
