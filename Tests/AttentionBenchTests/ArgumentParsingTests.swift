import ArgumentParser
import AttentionBenchCore
import Foundation
import XCTest

/// `attention-bench`'s command line: the defaults the issue asks for, every option, and
/// arguments that must be refused with a one-line message.
final class ArgumentParsingTests: XCTestCase {
    func testDefaultsAreTheDocumentedWorkload() throws {
        let command = try AttentionBenchCommand.parse([])
        let w = command.workload
        XCTAssertEqual(w.mode, .forward)
        XCTAssertEqual([w.dModel, w.heads, w.kvHeads, w.headDim, w.batch, w.sinks], [768, 12, 4, 64, 1, 4])
        XCTAssertTrue(w.rope)
        XCTAssertTrue(w.causal)
        XCTAssertEqual(w.sequenceLengths, [256, 512, 1024, 2048, 4096])
        XCTAssertEqual(w.threadCounts, Array(1...ProcessInfo.processInfo.activeProcessorCount))
        XCTAssertEqual(w.kernels, [.flash, .reference])
        XCTAssertEqual(w.iterations, 10)
        XCTAssertEqual(w.warmup, 1)
        XCTAssertEqual(w.maxSeconds, 6)
        XCTAssertEqual(w.sgemmSize, 1024)
        XCTAssertEqual(command.format, .table)
        XCTAssertNil(command.output)
        XCTAssertFalse(command.reportRSS)
        XCTAssertFalse(command.quiet)
    }

    func testEveryOptionIsParsed() throws {
        let command = try AttentionBenchCommand.parse([
            "--d-model", "256", "--heads", "8", "--kv-heads", "2", "--seq", "7,113", "--batch", "3",
            "--sinks", "2", "--no-causal", "--no-rope", "--threads", "2,1", "--iterations", "4",
            "--warmup", "0", "--kernel", "reference", "--format", "csv", "--output", "/tmp/x.csv",
            "--sgemm-size", "0", "--max-seconds", "0.5", "--quiet",
        ])
        let w = command.workload
        XCTAssertEqual(w.mode, .forward)
        XCTAssertEqual([w.dModel, w.heads, w.kvHeads, w.headDim, w.batch, w.sinks], [256, 8, 2, 32, 3, 2])
        XCTAssertFalse(w.causal)
        XCTAssertFalse(w.rope)
        XCTAssertEqual(w.sequenceLengths, [7, 113])
        XCTAssertEqual(w.threadCounts, [2, 1])
        XCTAssertEqual(w.iterations, 4)
        XCTAssertEqual(w.warmup, 0)
        XCTAssertEqual(w.kernels, [.reference])
        XCTAssertEqual(w.sgemmSize, 0)
        XCTAssertEqual(w.maxSeconds, 0.5)
        XCTAssertEqual(command.format, .csv)
        XCTAssertEqual(command.output, "/tmp/x.csv")
        XCTAssertTrue(command.quiet)

        XCTAssertEqual(try AttentionBenchCommand.parse(["--kernel", "flash"]).workload.kernels, [.flash])
        XCTAssertEqual(try AttentionBenchCommand.parse(["--format", "json"]).format, .json)
        XCTAssertTrue(try AttentionBenchCommand.parse(["--causal"]).workload.causal)
        XCTAssertTrue(try AttentionBenchCommand.parse(["--rope"]).workload.rope)
        XCTAssertTrue(try AttentionBenchCommand.parse(["--seq", "4096", "--kernel", "flash", "--report-rss"]).reportRSS)
    }

    func testAttentionOnlyHasNoSinksOrRoPE() throws {
        let w = try AttentionBenchCommand.parse(["--attention-only", "--kv-heads", "12", "--sinks", "0"]).workload
        XCTAssertEqual(w.mode, .attentionOnly)
        XCTAssertEqual(w.sinks, 0)
        XCTAssertFalse(w.rope)
        XCTAssertEqual(w.kvHeads, 12)
        XCTAssertEqual(try AttentionBenchCommand.parse(["--attention-only", "--no-rope"]).workload.mode, .attentionOnly)
    }

    /// Each refusal names the option, the value and the rule (where the message comes from
    /// swift-argument-parser: the option and the value).
    func testBadArgumentsAreRejected() {
        let cases: [([String], [String])] = [
            (["--bogus"], ["Unknown option '--bogus'"]),
            (["positional"], ["Unexpected argument 'positional'"]),
            (["--seq", "0"], ["--seq values", "must be > 0", "got 0"]),
            (["--seq=-5"], ["--seq values", "must be > 0", "got -5"]),
            (["--seq", "1,a"], ["The value '1,a' is invalid", "'--seq <n,n,...>'"]),
            (["--seq", "1,,2"], ["The value '1,,2' is invalid", "'--seq <n,n,...>'"]),
            (["--seq", ""], ["The value '' is invalid", "'--seq <n,n,...>'"]),
            (["--seq", "64,64"], ["--seq", "lists a value twice", "64,64"]),
            (["--threads", "0"], ["--threads values", "must be > 0", "got 0"]),
            (["--threads=-2"], ["--threads values", "must be > 0", "got -2"]),
            (["--threads", "1,1"], ["--threads", "lists a value twice", "1,1"]),
            (["--d-model", "0"], ["--d-model (0)", "must be > 0"]),
            (["--d-model=-8"], ["--d-model (-8)", "must be > 0"]),
            (["--d-model", "x"], ["The value 'x' is invalid", "'--d-model <d-model>'"]),
            (["--heads", "0"], ["--heads (0)", "must be > 0"]),
            (["--heads", "5"], ["--heads (5)", "must divide --d-model (768)"]),
            (["--kv-heads", "5"], ["--kv-heads (5)", "must divide --heads (12)"]),
            (["--kv-heads", "0"], ["--kv-heads (0)", "must be > 0"]),
            (["--batch", "0"], ["--batch (0)", "must be > 0"]),
            (["--sinks=-1"], ["--sinks (-1)", "must be >= 0"]),
            (["--iterations", "0"], ["--iterations (0)", "must be > 0"]),
            (["--iterations", "x"], ["The value 'x' is invalid", "'--iterations <iterations>'"]),
            (["--warmup=-1"], ["--warmup (-1)", "must be >= 0"]),
            (["--max-seconds=-1"], ["--max-seconds (-1.0)", "must be finite and >= 0"]),
            (["--max-seconds", "nan"], ["--max-seconds (nan)", "must be finite and >= 0"]),
            (["--max-seconds", "inf"], ["--max-seconds (inf)", "must be finite and >= 0"]),
            (["--sgemm-size=-1"], ["--sgemm-size (-1)", "must be >= 0"]),
            (["--kernel", "fast"], ["The value 'fast' is invalid", "'--kernel <kernel>'",
                                    "provide one of 'flash', 'reference' or 'both'"]),
            (["--format", "xml"], ["The value 'xml' is invalid", "'--format <format>'",
                                   "provide one of 'table', 'csv' or 'json'"]),
            (["--d-model", "36", "--heads", "12"],                  // head dim 3 is odd: no RoPE
             ["head dim (--d-model / --heads = 3)", "must be even with RoPE", "pass --no-rope"]),
            (["--attention-only", "--sinks", "4"], ["--sinks (4)", "needs the full forward", "--attention-only has no sinks"]),
            (["--attention-only", "--rope"], ["--rope", "needs the full forward", "--attention-only has no RoPE"]),
            // Five seqs, two kernels; then two kernels. The message does not say which (reported).
            (["--report-rss"], ["--report-rss", "needs one --seq and one --kernel (flash or reference)"]),
            (["--report-rss", "--seq", "1024"], ["--report-rss", "needs one --seq and one --kernel (flash or reference)"]),
            // 1,000,000 · 1,000,004 · 4 bytes; the message gives the size, not --seq (reported).
            (["--seq", "1000000", "--kernel", "reference"],
             ["the reference kernel needs 3725.3 GiB for one [N, S+N] score matrix", "over half of this machine's",
              "use --kernel flash"]),
        ]
        for (arguments, fragments) in cases {
            assertRejected(arguments, containing: fragments)
        }
        // swift-argument-parser reads a value that starts with "-" as the next option, so
        // "--seq -5" never reaches the bench's rule: it is refused for the missing value.
        for (option, valueName) in [("--seq", "n,n,..."), ("--sinks", "sinks"), ("--warmup", "warmup"),
                                    ("--max-seconds", "max-seconds"), ("--sgemm-size", "sgemm-size")] {
            assertRejected([option, "-5"], containing: ["Missing value for '\(option) <\(valueName)>'"])
        }
        // The head-dim rule is RoPE's alone.
        XCTAssertNoThrow(try AttentionBenchCommand.parse(["--d-model", "36", "--heads", "12", "--no-rope"]))
        assertRejected(["--backward", "--decode"],
                       containing: ["--backward times a forward and its backward over a whole sequence; --decode does not apply"])
        XCTAssertNoThrow(try AttentionBenchCommand.parse(["--backward", "--attention-only"]))
    }

    func testBadArgumentsExitNonZeroWithOneLine() throws {
        for arguments in [["--seq", "0"], ["--bogus"], ["--kernel", "fast"]] {
            let pipe = Pipe()
            let status = withStandardError(redirectedTo: pipe) {
                AttentionBenchCommand.main(arguments: arguments)
            }
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(status, 64, "\(arguments)")
            XCTAssertTrue(text.hasPrefix("attention-bench: error: "), "\(arguments): \(text)")
            XCTAssertEqual(text.split(separator: "\n").count, 1, "\(arguments): \(text)")
        }
    }

    func testFlopCountsFollowTheStatedFormula() throws {
        var w = try AttentionBenchCommand.parse(["--d-model", "64", "--heads", "4", "--kv-heads", "2", "--sinks", "3"]).workload
        let n = 10.0, d = 16.0, b = 1.0, h = 4.0, s = 3.0, kvDim = 32.0, dModel = 64.0
        let causalScores = n * s + n * (n + 1) / 2
        let attention = 4 * b * h * d * causalScores
        let projections = 2 * b * n * dModel * (2 * dModel + 2 * kvDim) + 2 * s * dModel * 2 * kvDim
        XCTAssertEqual(w.flops(sequenceLength: 10), attention + projections)
        w.causal = false
        XCTAssertEqual(w.visibleScores(sequenceLength: 10), n * s + n * n)
        w.mode = .attentionOnly
        w.sinks = 0
        XCTAssertEqual(w.flops(sequenceLength: 10), 4 * b * h * d * n * n)

        // --backward: 14 flops per visible score and head element, three times the projections.
        let training = try AttentionBenchCommand.parse(["--d-model", "64", "--heads", "4", "--kv-heads", "2",
                                                        "--sinks", "3", "--backward"]).workload
        XCTAssertEqual(training.backward, true)
        XCTAssertEqual(training.flops(sequenceLength: 10), 14 * b * h * d * causalScores + 3 * projections)
        XCTAssertNil(try AttentionBenchCommand.parse([]).workload.backward, "no key in a forward run's JSON")
        // The kernel alone: 4 forward + 10 backward flops per visible score and head element.
        let kernelTraining = try AttentionBenchCommand.parse(["--d-model", "64", "--heads", "4", "--kv-heads", "2",
                                                              "--attention-only", "--backward"]).workload
        XCTAssertEqual(kernelTraining.flops(sequenceLength: 10), (4 + 10) * b * h * d * (n * (n + 1) / 2))
    }

    /// Runs `body` with file descriptor 2 pointing into `pipe`, then restores it.
    private func withStandardError(redirectedTo pipe: Pipe, _ body: () -> Int32) -> Int32 {
        let saved = dup(2)
        dup2(pipe.fileHandleForWriting.fileDescriptor, 2)
        let status = body()
        dup2(saved, 2)
        close(saved)
        try? pipe.fileHandleForWriting.close()
        return status
    }
}
