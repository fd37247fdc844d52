import Foundation
import XCTest
@testable import Attention

/// SGD and AdamW against `torch.optim` on the committed fixtures (Scripts/make_optimizer_fixtures.py):
/// five steps from the same parameters with the same gradients. Tolerance: max relative
/// difference ≤ 1e-6, relative to each tensor's largest magnitude (max |Δ| / max |expected|),
/// as the suite's `Tolerance` scales. The update follows PyTorch's CPU kernels operation by
/// operation (which of them fuse a multiply-add), so SGD agrees to the bit here; AdamW cannot,
/// because PyTorch's `sqrt` on this build (MKL, AVX-512) is not correctly rounded (±1 ulp on 669
/// of 4,096 values in a check), and parameters that a step nearly cancels carry that ulp.
final class OptimizerTests: XCTestCase {
    static let config = try! AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                             useGQA: true, gqaGroups: 2)

    static func fixture(_ name: String) throws -> SafeTensorsFile {
        guard let folder = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw XCTSkip("the Fixtures resource folder is missing from the test bundle")
        }
        return try SafeTensorsFile(contentsOf: folder.appendingPathComponent("Optimizers/\(name).safetensors"))
    }

    /// The fixture's step-`t` gradients (input gradient: a placeholder the optimizers ignore).
    static func gradients(_ file: SafeTensorsFile, step t: Int, prefix: String? = nil) throws -> AttentionGradients {
        var parameters: [AttentionParameter: Tensor] = [:]
        for parameter in AttentionParameter.allCases {
            parameters[parameter] = try file.tensor((prefix ?? "step\(t).grad.") + parameter.stateDictName)
        }
        return try AttentionGradients(input: Tensor(zeros: [1, 1, 16]), parameters: parameters)
    }

    static func optimizer(for file: SafeTensorsFile) throws -> any AttentionOptimizer {
        func value(_ key: String) -> Float { Float(Double(file.metadata[key]!)!) }
        if file.metadata["optimizer"] == "sgd" {
            return try SGD(learningRate: value("lr"), momentum: value("momentum"), dampening: value("dampening"),
                           weightDecay: value("weight_decay"), nesterov: file.metadata["nesterov"] == "True")
        }
        return try AdamW(learningRate: value("lr"), betas: (value("beta1"), value("beta2")), eps: value("eps"),
                         weightDecay: value("weight_decay"))
    }

    private func assertRelativelyClose(_ actual: Tensor, _ expected: Tensor, _ label: String) {
        XCTAssertEqual(actual.shape, expected.shape, label)
        var worst = 0.0, scale = 0.0
        for (a, e) in zip(actual.scalars, expected.scalars) {
            let difference = Double(a) - Double(e)
            guard difference.isFinite else { return XCTFail("\(label): \(a) vs \(e)") }
            worst = max(worst, abs(difference))
            scale = max(scale, abs(Double(e)))
        }
        XCTAssertLessThanOrEqual(worst, 1e-6 * scale, "\(label): max |Δ| \(worst), max |expected| \(scale)")
    }

    func testFiveStepsEqualTorchOptim() throws {
        for name in ["sgd_plain", "sgd_momentum", "sgd_nesterov", "adamw_defaults", "adamw_custom"] {
            let file = try Self.fixture(name)
            var layer = try MultiHeadAttention(config: Self.config, seed: 0)
            try layer.loadWeights(from: file)
            var optimizer = try Self.optimizer(for: file)
            for t in 0..<5 {
                try optimizer.update(&layer, with: try Self.gradients(file, step: t))
                for parameter in AttentionParameter.allCases {
                    let expected = try file.tensor("step\(t).\(parameter.stateDictName)")
                    let label = "\(name), step \(t), \(parameter.stateDictName)"
                    assertRelativelyClose(layer.weight(parameter)!, expected, label)
                    if name.hasPrefix("sgd") { assertBitwiseEqual(layer.weight(parameter)!.scalars, expected.scalars, label) }
                }
            }
        }
    }

    func testDefaultsArePyTorchs() throws {
        let sgd = try SGD()
        XCTAssertEqual([sgd.learningRate, sgd.momentum, sgd.dampening, sgd.weightDecay], [1e-3, 0, 0, 0])
        XCTAssertFalse(sgd.nesterov)
        let adamW = try AdamW()
        XCTAssertEqual([adamW.learningRate, adamW.betas.0, adamW.betas.1, adamW.eps, adamW.weightDecay],
                       [1e-3, 0.9, 0.999, 1e-8, 1e-2])
        let file = try Self.fixture("adamw_defaults")
        XCTAssertEqual(file.metadata["lr"], "0.001")
        XCTAssertEqual(file.metadata["weight_decay"], "0.01")
    }

    func testFrozenParametersStayAsTheyWere() throws {
        let file = try Self.fixture("adamw_custom")
        var layer = try MultiHeadAttention(config: Self.config, seed: 0)
        try layer.loadWeights(from: file)
        let before = layer
        var optimizer = try AdamW(learningRate: 0.01, frozen: [.qProj, .kProj, .vProj, .outProj])
        try optimizer.update(&layer, with: try Self.gradients(file, step: 0))
        for parameter: AttentionParameter in [.qProj, .kProj, .vProj, .outProj] {
            XCTAssertEqual(layer.weight(parameter), before.weight(parameter), "\(parameter) is frozen")
            XCTAssertNil(optimizer.firstMoments[parameter], "no state for a frozen \(parameter)")
        }
        XCTAssertNotEqual(layer.weight(.sinkStates), before.weight(.sinkStates), "the sinks train")
    }

    func testClipGradNormEqualsTorch() throws {
        let file = try Self.fixture("clip_grad_norm")
        let gradients = try Self.gradients(file, step: 0, prefix: "grad.")
        let (clipped, norm) = try gradients.clippedByGlobalNorm(maxNorm: Float(Double(file.metadata["max_norm"]!)!))
        XCTAssertEqual(Double(norm), Double(try file.tensor("total_norm").scalars[0]), accuracy: 1e-6 * Double(norm))
        for parameter in AttentionParameter.allCases {
            assertRelativelyClose(clipped[parameter]!, try file.tensor("clipped." + parameter.stateDictName),
                                  "clipped \(parameter.stateDictName)")
        }
        // Under the norm: unchanged.
        let (same, _) = try gradients.clippedByGlobalNorm(maxNorm: norm * 2)
        for parameter in AttentionParameter.allCases { XCTAssertEqual(same[parameter], gradients[parameter]) }
        assertThrows(AttentionError.invalidInput, containing: ["maxNorm (0.0)", "must be finite and > 0"], "zero") {
            _ = try gradients.clippedByGlobalNorm(maxNorm: 0)
        }
    }

    /// Two steps, save, load into a new optimizer, three more: the same bits as five in a row.
    func testStateSavesAndResumesBitForBit() throws {
        let file = try Self.fixture("sgd_momentum")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("optimizer-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var start = try MultiHeadAttention(config: Self.config, seed: 0)
        try start.loadWeights(from: file)
        let optimizers: [(String, any AttentionOptimizer, (URL) throws -> any AttentionOptimizer)] = [
            ("sgd", try SGD(learningRate: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01, frozen: [.vProj]),
             { try SGD.load(from: $0) }),
            ("adamw", try AdamW(learningRate: 0.01, betas: (0.8, 0.95), eps: 1e-6, weightDecay: 0.1, frozen: [.vProj]),
             { try AdamW.load(from: $0) }),
        ]
        for (name, fresh, load) in optimizers {
            var straight = start, straightOptimizer = fresh
            for t in 0..<5 { try straightOptimizer.update(&straight, with: try Self.gradients(file, step: t)) }

            var resumed = start, first = fresh
            for t in 0..<2 { try first.update(&resumed, with: try Self.gradients(file, step: t)) }
            let url = directory.appendingPathComponent("\(name).safetensors")
            try first.save(to: url)
            var second = try load(url)
            XCTAssertEqual(second.frozen, [.vProj], name)
            for t in 2..<5 { try second.update(&resumed, with: try Self.gradients(file, step: t)) }
            for parameter in AttentionParameter.allCases {
                assertBitwiseEqual(resumed.weight(parameter)!.scalars, straight.weight(parameter)!.scalars,
                                   "\(name): \(parameter.stateDictName) after resuming")
            }
        }
        // Another optimizer's file is refused by name.
        let sgdURL = directory.appendingPathComponent("sgd.safetensors")
        try SGD().save(to: sgdURL)
        assertThrows(AttentionError.invalidFile, containing: ["sgd.safetensors", "optimizer is \"sgd\"", "expected \"adamw\""],
                     "wrong kind") { _ = try AdamW.load(from: sgdURL) }
    }

    func testBadHyperparametersThrowNamingThem() {
        assertThrows(AttentionError.invalidConfiguration, containing: ["learningRate (-0.1)", "must be finite and >= 0"],
                     "negative lr") { _ = try SGD(learningRate: -0.1) }
        assertThrows(AttentionError.invalidConfiguration, containing: ["nesterov needs momentum > 0 and dampening 0",
                                                                      "momentum 0.0"], "nesterov") {
            _ = try SGD(nesterov: true)
        }
        assertThrows(AttentionError.invalidConfiguration, containing: ["betas.1 (1.0)", "must be in [0, 1)"], "beta") {
            _ = try AdamW(betas: (0.9, 1))
        }
        assertThrows(AttentionError.invalidConfiguration, containing: ["eps (nan)", "must be finite and >= 0"], "eps") {
            _ = try AdamW(eps: .nan)
        }
    }

    /// A missing or misshapen gradient, or a step that would overflow: an error, and neither the
    /// layer nor the optimizer's state changes.
    func testAFailedUpdateChangesNothing() throws {
        let file = try Self.fixture("sgd_momentum")
        var layer = try MultiHeadAttention(config: Self.config, seed: 0)
        try layer.loadWeights(from: file)
        let before = layer
        var optimizer = try SGD(learningRate: 0.1, momentum: 0.9)
        var parameters: [AttentionParameter: Tensor] = [:]
        for parameter: AttentionParameter in [.qProj, .kProj, .vProj, .outProj] {
            parameters[parameter] = try file.tensor("step0.grad." + parameter.stateDictName)
        }
        let missingSinks = try AttentionGradients(input: Tensor(zeros: [1, 1, 16]), parameters: parameters)
        assertThrows(AttentionError.invalidInput, containing: ["no gradient for sink_states"], "missing") {
            try optimizer.update(&layer, with: missingSinks)
        }
        parameters[.sinkStates] = Tensor(zeros: [3, 16])
        assertThrows(AttentionError.invalidShape, containing: ["sink_states gradient shape [3, 16]", "[2, 16]"], "shape") {
            try optimizer.update(&layer, with: try AttentionGradients(input: Tensor(zeros: [1, 1, 16]), parameters: parameters))
        }
        var huge = try SGD(learningRate: 10)
        for parameter in AttentionParameter.allCases {
            parameters[parameter] = try Tensor(shape: layer.expectedShape(of: parameter)!,
                                               scalars: [Float](repeating: 3e38, count: layer.weight(parameter)!.count))
        }
        let overflowing = try AttentionGradients(input: Tensor(zeros: [1, 1, 16]), parameters: parameters)
        assertThrows(AttentionError.invalidInput, containing: ["would make q_proj.weight NaN or ±inf", "unchanged"],
                     "overflow") {
            try huge.update(&layer, with: overflowing)
        }
        for parameter in AttentionParameter.allCases { XCTAssertEqual(layer.weight(parameter), before.weight(parameter)) }
        XCTAssertTrue(optimizer.momentumBuffers.isEmpty)
    }

    /// Gradient accumulation: micro-batches of 2 and 1 rows accumulated equal the 3-row batch's
    /// gradients (a summed loss), parameters and input alike; `scaled` turns the sum into a mean.
    func testAccumulatedMicroBatchesEqualTheWholeBatch() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 2)
        let layer = try MultiHeadAttention(config: config, seed: 5)
        let x = randomTensor([3, 9, 16], seed: 6), dy = randomTensor([3, 9, 16], seed: 7)
        func rows(_ t: Tensor, _ range: Range<Int>) -> Tensor {
            try! Tensor(shape: [range.count, 9, 16], scalars: Array(t.scalars[(range.lowerBound * 144)..<(range.upperBound * 144)]))
        }
        let whole = try layer.forwardWithPullback(x).pullback(dy)
        let first = try layer.forwardWithPullback(rows(x, 0..<2)).pullback(rows(dy, 0..<2))
        let second = try layer.forwardWithPullback(rows(x, 2..<3)).pullback(rows(dy, 2..<3))
        let accumulated = try first.accumulating(second)
        assertClose(accumulated.input, whole.input, "dx")
        for parameter in AttentionParameter.allCases {
            assertClose(accumulated[parameter]!, whole[parameter]!, "d\(parameter.rawValue)")
        }
        // `+`: two losses over the same x add up, input gradients included.
        let twice = try whole + whole
        XCTAssertEqual(twice.input.scalars[7], 2 * whole.input.scalars[7])
        XCTAssertEqual(twice[.sinkStates]!.scalars[5], 2 * whole[.sinkStates]!.scalars[5])
        assertThrows(AttentionError.invalidShape, containing: ["input gradient shapes [3, 9, 16] and [2, 9, 16]"], "+") {
            _ = try whole + first
        }
        let mean = accumulated.scaled(by: 0.5)
        XCTAssertEqual(mean[.qProj]!.scalars[3], accumulated[.qProj]!.scalars[3] * 0.5)
        assertThrows(AttentionError.invalidShape, containing: ["input gradient shapes", "same seq and dModel"], "seq") {
            _ = try first.accumulating(try layer.forwardWithPullback(randomTensor([1, 4, 16], seed: 8))
                .pullback(randomTensor([1, 4, 16], seed: 9)))
        }
    }

    /// Sinks that learn: a student that differs from its teacher only in its sink states, trained
    /// on the sinks alone (AdamW, MSE against the teacher's outputs on fresh random sequences),
    /// ends with a loss at least 100× below where it started.
    func testTrainingOnlyTheSinksRecoversTheTeacher() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                         useGQA: true, gqaGroups: 2)
        var teacher = try MultiHeadAttention(config: config, seed: 11)
        try teacher.setWeight(randomTensor([2, 16], seed: 12, amplitude: 2), for: .sinkStates)
        var student = teacher
        try student.setWeight(randomTensor([2, 16], seed: 13, amplitude: 2), for: .sinkStates)
        var optimizer = try AdamW(learningRate: 0.05, weightDecay: 0, frozen: [.qProj, .kProj, .vProj, .outProj])
        func loss(_ x: Tensor) throws -> Double {
            let (y, target) = (try student.forward(x), try teacher.forward(x))
            return zip(y.scalars, target.scalars).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) } / Double(y.count)
        }
        let probe = randomTensor([4, 12, 16], seed: 99)
        let initial = try loss(probe)
        for step in 0..<300 {
            let x = randomTensor([4, 12, 16], seed: UInt64(1000 + step))
            let (y, pullback) = try student.forwardWithPullback(x)
            let target = try teacher.forward(x)
            let scale = 2 / Float(y.count)
            let dy = try Tensor(shape: y.shape, scalars: zip(y.scalars, target.scalars).map { scale * ($0 - $1) })
            try optimizer.update(&student, with: try pullback(dy))
        }
        let final = try loss(probe)
        XCTAssertLessThanOrEqual(final * 100, initial, "loss \(initial) → \(final)")
        XCTAssertEqual(student.weight(.qProj), teacher.weight(.qProj), "only the sinks moved")
    }
}
