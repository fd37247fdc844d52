import ArgumentParser
import AttentionBenchCore
import Foundation
import XCTest

/// `attention-bench --decode`: its options, and a tiny run whose CSV and JSON have the decode
/// columns. Timings are not asserted.
final class DecodeBenchTests: XCTestCase {
    func testDecodeParsesWithItsDefaults() throws {
        let command = try AttentionBenchCommand.parse(["--decode"])
        XCTAssertTrue(command.decode)
        let w = command.workload
        XCTAssertEqual(w.decode, DecodeSettings(keyChunksPerThread: 4))
        XCTAssertEqual(w.mode, .forward)
        XCTAssertEqual([w.dModel, w.heads, w.kvHeads, w.headDim, w.batch, w.sinks], [768, 12, 4, 64, 1, 4])
        XCTAssertTrue(w.rope)
        XCTAssertEqual(w.sequenceLengths, [1024, 4096])
        XCTAssertEqual(w.threadCounts, Array(1...ProcessInfo.processInfo.activeProcessorCount))
        XCTAssertEqual(w.kernels, [.flash])
        XCTAssertEqual(w.iterations, 50)
        XCTAssertEqual(w.warmup, 5)
        XCTAssertEqual(w.maxSeconds, 0)

        let kernelOnly = try AttentionBenchCommand.parse([
            "--decode", "--attention-only", "--seq", "8,16", "--threads", "2", "--iterations", "3", "--warmup", "0",
        ]).workload
        XCTAssertEqual(kernelOnly.mode, .attentionOnly)
        XCTAssertEqual(kernelOnly.sinks, 0)
        XCTAssertEqual(kernelOnly.sequenceLengths, [8, 16])
        XCTAssertEqual(kernelOnly.threadCounts, [2])
        XCTAssertEqual([kernelOnly.iterations, kernelOnly.warmup], [3, 0])

        XCTAssertNil(try AttentionBenchCommand.parse([]).workload.decode, "no --decode: the prefill workload")
        assertRejected(["--decode", "--kernel", "reference"],
                       containing: ["--decode times the flash kernel", "--kernel reference does not apply"])
        assertRejected(["--decode", "--seq", "0"], containing: ["--seq values", "must be > 0", "got 0"])
        assertRejected(["--decode", "--seq", "64,64"], containing: ["--seq", "lists a value twice", "64,64"])
        // Two cache lengths (the default 1024,4096); the message does not say so (reported).
        assertRejected(["--decode", "--report-rss"], containing: ["--report-rss", "needs one --seq", "one cache length"])
        XCTAssertNoThrow(try AttentionBenchCommand.parse(["--decode", "--report-rss", "--seq", "64"]))
    }

    private func tinyDecodeWorkload(mode: Workload.Mode) -> Workload {
        Workload(mode: mode, batch: 1, dModel: 32, heads: 4, kvHeads: 2,
                 sinks: mode == .forward ? 2 : 0, rope: mode == .forward, causal: true,
                 sequenceLengths: [8], threadCounts: [1, 2], kernels: [.flash],
                 iterations: 1, warmup: 0, maxSeconds: 0, sgemmSize: 0, seed: 1,
                 decode: DecodeSettings())
    }

    func testTinyDecodeRunProducesWellFormedCSV() throws {
        let report = try BenchRunner(workload: tinyDecodeWorkload(mode: .forward)).run()
        XCTAssertTrue(report.results.isEmpty)
        let rows = csvRows(report)
        XCTAssertEqual(rows.first, BenchReport.decodeCsvColumns)
        XCTAssertEqual(rows.count, 1 + 2 * 2 * 2, "header + (layer, kernel) × threads × splits")
        let column = Dictionary(uniqueKeysWithValues: BenchReport.decodeCsvColumns.enumerated().map { ($1, $0) })
        // Cache of 8 tokens: 2 (keys, values) · 8 · Hkv · D · 4 bytes, and with Hkv = H.
        let cacheBytes = 2 * 8 * 2 * 8 * 4, withoutGQA = 2 * 8 * 4 * 8 * 4
        for row in rows.dropFirst() {
            XCTAssertEqual(row.count, BenchReport.decodeCsvColumns.count, "\(row)")
            XCTAssertTrue(["forward", "attention-only"].contains(row[column["mode"]!]), "\(row)")
            XCTAssertEqual(row[column["cache_length"]!], "8")
            XCTAssertTrue(["1", "2"].contains(row[column["threads"]!]))
            let split = row[column["split"]!]
            XCTAssertTrue(["unsplit", "split"].contains(split), "\(row)")
            let chunks = row[column["key_chunks"]!]
            if split == "split" {
                XCTAssertEqual(Int(chunks), 4 * Int(row[column["threads"]!])!)
            } else {
                XCTAssertEqual(chunks, "")
            }
            XCTAssertEqual(row[column["iterations"]!], "1")
            for name in ["median_ms", "min_ms", "tokens_per_second"] {
                let value = Double(row[column[name]!])
                XCTAssertTrue(value.map { $0.isFinite && $0 > 0 } ?? false, "\(name) in \(row)")
            }
            XCTAssertEqual(Int(row[column["cache_bytes"]!]), cacheBytes)
            XCTAssertEqual(Int(row[column["cache_bytes_without_gqa"]!]), withoutGQA)
            XCTAssertFalse(row[column["openblas_core"]!].isEmpty)
        }
        let modes = rows.dropFirst().map { $0[column["mode"]!] }
        XCTAssertEqual(modes, Array(repeating: "forward", count: 4) + Array(repeating: "attention-only", count: 4),
                       "layer rows, then kernel rows")

        let table = report.table()
        XCTAssertTrue(table.contains("attention-bench --decode"))
        XCTAssertEqual(table.split(separator: "\n").filter { $0.hasPrefix("layer ") || $0.hasPrefix("kernel ") }.count, 8)
    }

    func testTinyKernelOnlyDecodeRunProducesWellFormedJSON() throws {
        let report = try BenchRunner(workload: tinyDecodeWorkload(mode: .attentionOnly)).run()
        let json = try report.json()

        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["machine", "workload", "sgemm", "results", "memory", "peak_rss_bytes", "decode"])
        let rows = try XCTUnwrap(object["decode"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 2 * 2, "kernel rows only: threads × splits")
        for row in rows {
            for key in ["mode", "cache_length", "threads", "split", "iterations", "median_ms", "min_ms",
                        "tokens_per_second", "cache_bytes", "cache_bytes_without_gqa"] {
                XCTAssertNotNil(row[key], "\(key) in \(row)")
            }
            XCTAssertEqual(row["mode"] as? String, "attention-only")
        }
        let workload = try XCTUnwrap(object["workload"] as? [String: Any])
        XCTAssertEqual((workload["decode"] as? [String: Any])?["key_chunks_per_thread"] as? Int, 4)

        let decoded = try BenchReport.decode(json: json)
        XCTAssertEqual(decoded, report)
        XCTAssertEqual(decoded.decode?.map(\.split), [.unsplit, .split, .unsplit, .split])
        XCTAssertEqual(decoded.decode?.map(\.keyChunks), [nil, 4, nil, 8])
    }

    func testCommandWritesDecodeJSON() throws {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("attention-bench-decode-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        let status = AttentionBenchCommand.main(arguments: [
            "--decode", "--d-model", "16", "--heads", "2", "--kv-heads", "1", "--seq", "8", "--threads", "1",
            "--iterations", "1", "--warmup", "0", "--sgemm-size", "0", "--format", "json",
            "--output", url.path, "--quiet",
        ])
        XCTAssertEqual(status, 0)
        let report = try BenchReport.decode(json: try String(contentsOf: url, encoding: .utf8))
        XCTAssertEqual(report.decode?.map(\.mode), [.forward, .forward, .attentionOnly, .attentionOnly])
        XCTAssertTrue(report.results.isEmpty)
    }
}
