import Attention
import AttentionBenchCore
import Foundation
import XCTest

/// A tiny workload run end to end (debug build, milliseconds): the CSV and JSON it writes parse
/// back with the promised columns and keys. Timings are not asserted.
final class TinyRunTests: XCTestCase {
    private func tinyWorkload(mode: Workload.Mode = .forward) -> Workload {
        Workload(mode: mode, batch: 2, dModel: 32, heads: 4, kvHeads: 2,
                 sinks: mode == .forward ? 2 : 0, rope: mode == .forward, causal: true,
                 sequenceLengths: [7, 33], threadCounts: [1, 2], kernels: [.flash, .reference],
                 iterations: 2, warmup: 1, maxSeconds: 0, sgemmSize: 32, seed: 1)
    }

    /// `--backward`: every row is a training step of one kernel, timed and finite.
    func testTinyBackwardRunTimesBothKernels() throws {
        var workload = tinyWorkload()
        workload.backward = true
        let report = try BenchRunner(workload: workload).run()
        XCTAssertEqual(report.results.count, 2 * 2 * 2, "seqs × threads × kernels")
        for row in report.results {
            XCTAssertTrue(row.medianMs > 0 && row.gflops.isFinite && row.gflops > 0, "\(row)")
        }
        XCTAssertTrue(report.table().contains("forwardWithPullback"))
    }

    /// `--backward --attention-only`: the kernel's training step, both kernels; with memory
    /// reporting, one more step splits its memory at the pullback, and the gradients returned
    /// (q, k and v-sized) are counted exactly.
    func testTinyKernelBackwardRunReportsItsMemory() throws {
        var workload = tinyWorkload(mode: .attentionOnly)
        workload.backward = true
        workload.sequenceLengths = [33]
        workload.kernels = [.flash]
        let report = try BenchRunner(workload: workload, reportsMemory: true).run()
        XCTAssertEqual(report.results.count, 2, "threads")
        for row in report.results {
            XCTAssertTrue(row.medianMs > 0 && row.gflops.isFinite && row.gflops > 0, "\(row)")
        }
        let memory = try XCTUnwrap(report.memory.first?.backward)
        // q [2, 33, 32] and k, v [2, 33, 16] floats.
        XCTAssertEqual(memory.gradientBytes, (2 * 33 * 32 + 2 * 2 * 33 * 16) * 4)
        XCTAssertGreaterThanOrEqual(memory.forwardKeptBytes, 0)
        let table = report.table(reportRSS: true)
        XCTAssertTrue(table.contains("scaledDotProductAttentionWithPullback"), table)
        XCTAssertTrue(table.contains("one training step at seq 33: the forward kept"), table)
        XCTAssertNotNil(try report.json().range(of: "\"backward_peak_bytes\""))
    }

    func testTinyRunProducesWellFormedCSV() throws {
        let report = try BenchRunner(workload: tinyWorkload()).run()
        let rows = csvRows(report)
        XCTAssertEqual(rows.first, BenchReport.csvColumns)
        XCTAssertEqual(rows.count, 1 + 2 * 2 * 2, "header + seqs × threads × kernels")
        let column = Dictionary(uniqueKeysWithValues: BenchReport.csvColumns.enumerated().map { ($1, $0) })
        for row in rows.dropFirst() {
            XCTAssertEqual(row.count, BenchReport.csvColumns.count, "\(row)")
            XCTAssertEqual(row[column["mode"]!], "forward")
            XCTAssertTrue(["flash", "reference"].contains(row[column["kernel"]!]))
            XCTAssertTrue(["7", "33"].contains(row[column["seq"]!]))
            for name in ["median_ms", "min_ms", "gflop", "gflops", "sgemm_gflops", "pct_of_sgemm",
                         "speedup_over_fewest_threads", "flash_over_reference"] {
                let value = Double(row[column[name]!])
                XCTAssertNotNil(value, "\(name) in \(row)")
                XCTAssertTrue(value.map { $0.isFinite && $0 > 0 } ?? false, "\(name) in \(row)")
            }
            XCTAssertFalse(row[column["openblas_core"]!].isEmpty)
            XCTAssertEqual(row[column["cpu_level"]!], CPULevel.active.rawValue)
        }
    }

    func testTinyRunProducesWellFormedJSON() throws {
        let report = try BenchRunner(workload: tinyWorkload(mode: .attentionOnly)).run()
        let json = try report.json()

        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        XCTAssertEqual(Set(object.keys), ["machine", "workload", "sgemm", "results", "memory", "peak_rss_bytes"])
        let results = try XCTUnwrap(object["results"] as? [[String: Any]])
        XCTAssertEqual(results.count, 2 * 2 * 2)
        for key in ["median_ms", "gflops", "threads", "seq", "kernel", "flash_over_reference"] {
            XCTAssertNotNil(results[0][key], key)
        }
        let machine = try XCTUnwrap(object["machine"] as? [String: Any])
        XCTAssertNotNil(machine["openblas_core"] as? String)
        XCTAssertEqual(machine["cpu_level"] as? String, CPULevel.active.rawValue)
        XCTAssertEqual(machine["cpu_level_supported"] as? String, CPULevel.supported.rawValue)

        let decoded = try BenchReport.decode(json: json)
        XCTAssertEqual(decoded.results.count, 8)
        XCTAssertEqual(decoded.workload, report.workload)
        XCTAssertEqual(decoded.sgemm.map(\.threads), [1, 2])
        XCTAssertTrue(decoded.results.allSatisfy { $0.mode == .attentionOnly && $0.sinks == 0 })
        XCTAssertEqual(decoded.memory.map(\.seq), [7, 33])
        XCTAssertGreaterThan(decoded.peakRssBytes, 0)
        XCTAssertTrue(decoded.memory.allSatisfy { $0.peakRssBytes >= $0.baselinePeakRssBytes })
    }

    func testCommandWritesTheReportFile() throws {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("attention-bench-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: url) }
        let status = AttentionBenchCommand.main(arguments: [
            "--d-model", "16", "--heads", "2", "--kv-heads", "1", "--seq", "5", "--threads", "1",
            "--iterations", "1", "--warmup", "0", "--sgemm-size", "0", "--kernel", "flash",
            "--report-rss", "--format", "json", "--output", url.path, "--quiet",
        ])
        XCTAssertEqual(status, 0)
        let report = try BenchReport.decode(json: try String(contentsOf: url, encoding: .utf8))
        XCTAssertEqual(report.results.map(\.kernel), [.flash])
        XCTAssertNil(report.results[0].flashOverReference, "one kernel: no ratio")
        XCTAssertNil(report.results[0].sgemmGflops, "--sgemm-size 0 skips the sgemm rate")
        XCTAssertTrue(report.sgemm.isEmpty)
    }

    func testTableNamesTheMachineAndEveryRow() throws {
        var workload = tinyWorkload()
        workload.sequenceLengths = [9]
        let table = try BenchRunner(workload: workload).run().table(reportRSS: true)
        XCTAssertTrue(table.contains("OpenBLAS: "))
        XCTAssertTrue(table.contains("sgemm 32³: 1 thread"))
        XCTAssertTrue(table.contains("RSS at seq 9: baseline"))
        XCTAssertTrue(table.contains("peak RSS: "))
        let rows = table.split(separator: "\n").filter { $0.split(separator: " ").first == "9" }
        XCTAssertEqual(rows.count, 4, "2 thread counts × 2 kernels")
    }
}

/// The cells of `report.csv()`, row by row, after checking that the text ends with a newline.
func csvRows(_ report: BenchReport, file: StaticString = #filePath, line: UInt = #line) -> [[String]] {
    let lines = report.csv().split(separator: "\n", omittingEmptySubsequences: false)
    XCTAssertEqual(lines.last, "", "the CSV ends with a newline", file: file, line: line)
    return lines.dropLast().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
}
