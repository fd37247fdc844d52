import ArgumentParser
import Attention
import AttentionCommandLine
import Foundation

/// `attention-train`: a student attention layer learns a teacher's outputs (``TeacherStudentTraining``).
public struct AttentionTrainCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "attention-train",
        abstract: "Trains a student attention layer to reproduce a teacher layer's outputs on random sequences.",
        discussion: """
        Teacher and student share one configuration (GQA, RoPE, attention sinks, dropout) and \
        start from different seeds. Each step draws a batch of random sequences x ~ U(-1, 1), \
        runs the student with dropout on (MultiHeadAttention.forwardWithPullback, training: \
        true), and takes one optimizer step on the mean squared error against the teacher's \
        output (dropout off), after clipping the gradients' global norm; the learning rate \
        falls linearly from --lr to --lr / --steps. Every parameter trains: the four \
        projections and the sink states.

        Each step prints a progress line on stderr (training loss, evaluation loss when \
        measured, gradient norm, tokens/s). The evaluation loss is the student's MSE on one \
        fixed probe batch with dropout off, before the first step and every --eval-every \
        steps. The loss curve goes to --csv as step,train_loss,eval_loss,grad_norm,\
        tokens_per_second,seconds (row 0: the initial evaluation loss); \
        Scripts/plot_training.py draws it. The last line on stdout gives the evaluation loss \
        before and after and the factor it fell by.
        """)

    @Option(name: .customLong("d-model"), help: "Model width dModel.")
    public var dModel = 64
    @Option(help: "Query heads; must divide dModel.")
    public var heads = 4
    @Option(name: .customLong("kv-heads"), help: "Key/value heads (GQA when fewer than heads); must divide heads.")
    public var kvHeads = 2
    @Option(help: "Attention-sink tokens (0: none).")
    public var sinks = 2
    @Option(help: "Dropout on the attention weights while training, in [0, 1).")
    public var dropout: Float = 0.1
    @Option(help: "Tokens per sequence.")
    public var seq = 32
    @Option(help: "Sequences per step.")
    public var batch = 16
    @Option(help: "Optimizer steps.")
    public var steps = 300
    @Option(help: "adamw (weight decay 0) or sgd (momentum 0.9).")
    public var optimizer = TeacherStudentTraining.OptimizerKind.adamw
    @Option(name: .customLong("lr"), help: "Learning rate of the first step; it falls linearly to lr / steps at the last.")
    public var learningRate: Float = 1e-2
    @Option(name: .customLong("clip-norm"), help: "Maximum global gradient norm (clip_grad_norm_); 0: no clipping.")
    public var clipNorm: Float = 1
    @Option(name: .customLong("eval-every"), help: "Steps between evaluations of the probe batch.")
    public var evaluationInterval = 10
    @Option(help: "Workers of the layer (default: one per processor).")
    public var threads: Int?
    @Option(help: "Seed of the teacher, the student (seed + 1000003) and the data.")
    public var seed: UInt64 = 1
    @Option(help: "Write the loss curve here as CSV.")
    public var csv = "attention-train-loss.csv"
    @Flag(help: "No progress lines on stderr.")
    public var quiet = false

    public init() {}

    public var settings: TeacherStudentTraining.Settings {
        var s = TeacherStudentTraining.Settings()
        (s.dModel, s.heads, s.kvHeads, s.sinks, s.dropout) = (dModel, heads, kvHeads, sinks, dropout)
        (s.seq, s.batch, s.steps, s.optimizer, s.learningRate) = (seq, batch, steps, optimizer, learningRate)
        (s.clipNorm, s.evaluationInterval, s.threads, s.seed) = (clipNorm > 0 ? clipNorm : nil, evaluationInterval, threads, seed)
        return s
    }

    public mutating func validate() throws {
        for (name, value) in [("d-model", dModel), ("heads", heads), ("kv-heads", kvHeads), ("seq", seq),
                              ("batch", batch), ("steps", steps), ("eval-every", evaluationInterval)] where value <= 0 {
            throw ValidationError("--\(name) (\(value)) must be > 0")
        }
        if let threads, threads <= 0 { throw ValidationError("--threads (\(threads)) must be > 0") }
        if sinks < 0 { throw ValidationError("--sinks (\(sinks)) must be >= 0") }
        guard learningRate.isFinite, learningRate > 0 else {
            throw ValidationError("--lr (\(learningRate)) must be finite and > 0")
        }
        guard clipNorm.isFinite, clipNorm >= 0 else {
            throw ValidationError("--clip-norm (\(clipNorm)) must be finite and >= 0")
        }
        do {
            _ = try TeacherStudentTraining(settings: settings).config()
        } catch let error as AttentionError {
            throw ValidationError("\(error)")
        }
    }

    public mutating func run() throws {
        let quiet = self.quiet, total = steps
        let training = TeacherStudentTraining(settings: settings)
        let result = try training.run { step in
            guard !quiet else { return }
            var line = String(format: "attention-train: step %d/%d  loss %.4e", step.step, total, step.trainLoss)
            if let evaluation = step.evaluationLoss { line += String(format: "  eval %.4e", evaluation) }
            line += String(format: "  grad norm %.3g  %.0f tokens/s\n", step.gradientNorm, step.tokensPerSecond)
            FileHandle.standardError.write(Data(line.utf8))
        }
        do {
            try TeacherStudentTraining.csv(result).write(toFile: csv, atomically: true, encoding: .utf8)
        } catch {
            throw ValidationError("cannot write --csv \(csv): \(error.localizedDescription)")
        }
        let tokens = Double(batch * seq * steps)
        print(String(format: "attention-train: %d steps in %.1f s (%.0f tokens/s); evaluation loss %.4e -> %.4e, "
                         + "fell %.1fx; curve in %@", steps, result.seconds, tokens / result.seconds,
                     result.initialLoss, result.finalLoss, result.reduction, csv))
    }

    /// Runs the command on `arguments`; returns the exit status (64 for bad arguments), the
    /// error on one stderr line.
    public static func main(arguments: [String]) -> Int32 {
        exitStatus(name: "attention-train", arguments: arguments)
    }
}

extension TeacherStudentTraining.OptimizerKind: ExpressibleByArgument {}
