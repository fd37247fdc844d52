import Attention
import AttentionCommandLine
import Foundation

/// A student ``MultiHeadAttention`` learns to reproduce a teacher's outputs: both layers share a
/// configuration (GQA, RoPE, sinks, dropout) but start from different seeds; each step draws a
/// fresh batch of random sequences `x ~ U(−1, 1)`, runs the student in training mode (dropout
/// on), and takes one optimizer step on the mean squared error against the teacher's output in
/// evaluation mode, with the learning rate falling linearly to zero over the run:
///
///     L = mean((student(x) − teacher(x))²);  dL/dy = 2 (student(x) − teacher(x)) / count
///
/// At the defaults (dModel 64, 4/2 heads, 2 sinks, dropout 0.1, 16 × 32 tokens per step, AdamW
/// at 1e-2) the evaluation loss falls 140–170× in 300 steps for seeds 1–5, in under a second on
/// 2 cores (release build).
///
/// Every `evaluationInterval` steps (and at the first and last) the student is also measured on
/// a fixed probe batch in evaluation mode, dropout off: the loss the curve and the "falls by"
/// figure use, free of dropout's noise.
public struct TeacherStudentTraining: Sendable {
    public struct Settings: Sendable, Equatable, Codable {
        public var dModel = 64
        public var heads = 4
        public var kvHeads = 2
        public var sinks = 2
        public var dropout: Float = 0.1
        public var seq = 32
        public var batch = 16
        public var steps = 300
        public var optimizer = OptimizerKind.adamw
        /// The first step's; it falls linearly to `learningRate / steps` at the last.
        public var learningRate: Float = 1e-2
        /// `clip_grad_norm_`'s maximum, or `nil` for no clipping.
        public var clipNorm: Float? = 1
        public var evaluationInterval = 10
        /// Workers of the layer's kernels and projections; `nil`: one per processor.
        public var threads: Int? = nil
        public var seed: UInt64 = 1

        public init() {}
    }

    public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
        case adamw, sgd
    }

    /// One step's measurements.
    public struct Step: Sendable, Equatable {
        /// 1-based.
        public var step: Int
        /// The step's training loss (dropout on), before its update.
        public var trainLoss: Double
        /// The probe batch's loss after the update, dropout off; `nil` between evaluations.
        public var evaluationLoss: Double?
        /// Gradient 2-norm before clipping.
        public var gradientNorm: Float
        /// Tokens of this step (batch × seq) over its wall time, forward + backward + update.
        public var tokensPerSecond: Double
        public var seconds: Double
    }

    public struct Result: Sendable {
        /// The probe batch's loss before the first step.
        public var initialLoss: Double
        public var steps: [Step]
        public var seconds: Double
        public var student: MultiHeadAttention
        /// The last evaluation's loss.
        public var finalLoss: Double { steps.last(where: { $0.evaluationLoss != nil })?.evaluationLoss ?? initialLoss }
        /// `initialLoss / finalLoss`.
        public var reduction: Double { initialLoss / finalLoss }
    }

    public var settings: Settings

    public init(settings: Settings) {
        self.settings = settings
    }

    public func config() throws -> AttentionConfig {
        let s = settings
        return try AttentionConfig(
            dModel: s.dModel, nHeads: s.heads, useAttentionSinks: s.sinks > 0, numAttentionSinks: max(s.sinks, 1),
            useGQA: s.kvHeads != s.heads, gqaGroups: s.kvHeads != s.heads ? s.kvHeads : nil, dropout: s.dropout)
    }

    /// Runs the training; `progress` sees every step as it ends.
    public func run(progress: (Step) -> Void = { _ in }) throws -> Result {
        let s = settings
        let config = try self.config()
        let teacher = try MultiHeadAttention(config: config, seed: s.seed)
        var student = try MultiHeadAttention(config: config, seed: s.seed &+ 1_000_003)
        student.kernelWorkerCount = s.threads
        var optimizer: any AttentionOptimizer = switch s.optimizer {
        case .adamw: try AdamW(learningRate: s.learningRate, weightDecay: 0)
        case .sgd: try SGD(learningRate: s.learningRate, momentum: 0.9)
        }
        let probe = try randomSequences(seed: s.seed &* 1_000 &+ 7)
        let probeTarget = try teacher.forward(probe)
        func evaluationLoss() throws -> Double { Self.meanSquaredError(try student.forward(probe), probeTarget) }

        let initialLoss = try evaluationLoss()
        var steps: [Step] = []
        let start = DispatchTime.now().uptimeNanoseconds
        for index in 1...max(1, s.steps) {
            let stepStart = DispatchTime.now().uptimeNanoseconds
            let x = try randomSequences(seed: s.seed &* 1_000 &+ 7 &+ UInt64(index))
            let target = try teacher.forward(x)
            let (y, pullback) = try student.forwardWithPullback(x, training: true, dropoutSeed: s.seed &+ UInt64(index))
            let scale = 2 / Float(y.count)
            let dy = try Tensor(shape: y.shape, scalars: zip(y.scalars, target.scalars).map { scale * ($0 - $1) })
            var gradients = try pullback(dy)
            var norm = Float(0)
            if let clipNorm = s.clipNorm {
                (gradients, norm) = try gradients.clippedByGlobalNorm(maxNorm: clipNorm)
            } else {
                norm = try gradients.clippedByGlobalNorm(maxNorm: .greatestFiniteMagnitude).totalNorm
            }
            // Linear decay to zero over the run: the last steps settle instead of jittering.
            optimizer.learningRate = s.learningRate * Float(s.steps - index + 1) / Float(max(1, s.steps))
            try optimizer.update(&student, with: gradients)
            let evaluates = index == 1 || index == s.steps || index % max(1, s.evaluationInterval) == 0
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - stepStart) / 1e9
            let step = Step(step: index, trainLoss: Self.meanSquaredError(y, target),
                            evaluationLoss: evaluates ? try evaluationLoss() : nil, gradientNorm: norm,
                            tokensPerSecond: Double(s.batch * s.seq) / seconds, seconds: seconds)
            steps.append(step)
            progress(step)
        }
        return Result(initialLoss: initialLoss, steps: steps,
                      seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9, student: student)
    }

    /// A batch of sequences `x ~ U(−1, 1)`, `[batch, seq, dModel]`.
    private func randomSequences(seed: UInt64) throws -> Tensor {
        try Tensor(shape: [settings.batch, settings.seq, settings.dModel],
                   scalars: uniformScalars(count: settings.batch * settings.seq * settings.dModel, seed: seed))
    }

    static func meanSquaredError(_ y: Tensor, _ target: Tensor) -> Double {
        zip(y.scalars, target.scalars).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) } / Double(max(1, y.count))
    }

    /// The loss curve as CSV: `step,train_loss,eval_loss,grad_norm,tokens_per_second,seconds`,
    /// a row 0 with the initial evaluation loss, and an empty `eval_loss` between evaluations.
    public static func csv(_ result: Result) -> String {
        var lines = ["step,train_loss,eval_loss,grad_norm,tokens_per_second,seconds",
                     "0,,\(result.initialLoss),,,0"]
        for step in result.steps {
            lines.append("\(step.step),\(step.trainLoss),\(step.evaluationLoss.map { "\($0)" } ?? ""),"
                         + "\(step.gradientNorm),\(step.tokensPerSecond),\(step.seconds)")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
