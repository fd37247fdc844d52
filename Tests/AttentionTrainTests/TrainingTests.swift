import Attention
import AttentionTrainCore
import Foundation
import XCTest

/// The training command end to end on tiny sizes (a debug build trains in a second).
final class TrainingTests: XCTestCase {
    private func tinySettings() -> TeacherStudentTraining.Settings {
        var s = TeacherStudentTraining.Settings()
        (s.dModel, s.heads, s.kvHeads, s.sinks, s.seq, s.batch, s.steps) = (16, 4, 2, 2, 8, 8, 120)
        s.evaluationInterval = 20
        return s
    }

    /// A student of a tiny teacher (GQA, RoPE, sinks, dropout on) cuts its evaluation loss ≥ 10×.
    func testTinyTrainingCutsTheLossTenfold() throws {
        let result = try TeacherStudentTraining(settings: tinySettings()).run()
        XCTAssertEqual(result.steps.count, 120)
        XCTAssertGreaterThanOrEqual(result.reduction, 10, "evaluation loss \(result.initialLoss) → \(result.finalLoss)")
        XCTAssertTrue(result.steps.allSatisfy { $0.trainLoss.isFinite && $0.tokensPerSecond > 0 })
        XCTAssertEqual(result.steps.compactMap(\.evaluationLoss).count, 7, "steps 1, 20, 40, …, 120")
    }

    /// Every parameter trains, and the same seed gives the same run.
    func testEveryParameterMovesAndARunRepeats() throws {
        var settings = tinySettings()
        settings.steps = 5
        let training = TeacherStudentTraining(settings: settings)
        let (first, second) = (try training.run(), try training.run())
        let start = try MultiHeadAttention(config: try training.config(), seed: settings.seed &+ 1_000_003)
        for parameter in AttentionParameter.allCases {
            XCTAssertNotEqual(first.student.weight(parameter), start.weight(parameter), "\(parameter) trained")
            XCTAssertEqual(first.student.weight(parameter), second.student.weight(parameter), "\(parameter) repeats")
        }
    }

    /// The command writes the CSV curve and refuses bad options with exit status 64.
    func testCommandWritesTheCurveAndRejectsBadOptions() throws {
        let csv = FileManager.default.temporaryDirectory.appendingPathComponent("train-\(UUID()).csv").path
        defer { try? FileManager.default.removeItem(atPath: csv) }
        XCTAssertEqual(AttentionTrainCommand.main(arguments: [
            "--d-model", "16", "--heads", "4", "--kv-heads", "2", "--seq", "6", "--batch", "2", "--steps", "4",
            "--eval-every", "2", "--csv", csv, "--quiet"]), 0)
        let lines = try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.first, "step,train_loss,eval_loss,grad_norm,tokens_per_second,seconds")
        XCTAssertEqual(lines.count, 1 + 1 + 4, "header, the initial loss, one row per step")
        XCTAssertEqual(lines[1].split(separator: ",", omittingEmptySubsequences: false).count, 6)
        XCTAssertTrue(lines[1].hasPrefix("0,,"), String(lines[1]))
        for bad in [["--steps", "0"], ["--lr=-1"], ["--heads", "3"], ["--dropout", "1.5"], ["--optimizer", "lion"]] {
            XCTAssertEqual(AttentionTrainCommand.main(arguments: bad + ["--quiet"]), 64, "\(bad)")
        }
    }
}
