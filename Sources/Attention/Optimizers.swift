import Foundation

/// One optimizer step over a ``MultiHeadAttention``'s parameters, from the gradients of its
/// pullback (``MultiHeadAttention/forwardWithPullback(_:mask:training:dropoutSeed:kernel:)``):
///
///     var optimizer = try AdamW(learningRate: 1e-3)
///     let (y, pullback) = try layer.forwardWithPullback(x, training: true)
///     try optimizer.update(&layer, with: try pullback(dLoss_dy))
///
/// ``SGD`` and ``AdamW`` follow `torch.optim.SGD` and `torch.optim.AdamW` (defaults, update
/// rules, the order of their floating-point operations). A parameter in `frozen` is neither
/// updated nor given optimizer state: `frozen = [.qProj, .kProj, .vProj, .outProj]` trains the
/// sink states alone.
///
/// Updates are all-or-nothing: every new value is computed and checked (finite, and every
/// trained parameter has a gradient of its shape) before the first parameter is replaced; on a
/// throw the layer and the optimizer's state are unchanged. The state saves to and loads from a
/// safetensors file, so a run that stops can resume bit for bit.
public protocol AttentionOptimizer: Sendable {
    /// The parameters left alone.
    var frozen: Set<AttentionParameter> { get set }

    /// The step size of the next update; a schedule may change it between steps.
    var learningRate: Float { get set }

    /// One step: every parameter the layer has and that is not frozen moves by its gradient.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` when a trained parameter has no gradient,
    ///   ``AttentionError/invalidShape(_:)`` when a gradient's shape is not its parameter's, and
    ///   ``AttentionError/invalidInput(_:)`` when the step would make a parameter NaN or ±∞.
    mutating func update(_ layer: inout MultiHeadAttention, with gradients: AttentionGradients) throws

    /// The hyperparameters and the state, as ``load(from:)`` reads them.
    func save(to url: URL) throws
}

extension AttentionOptimizer {
    /// The parameters one step updates, each with its value and gradient, checked.
    func trainedParameters(
        of layer: MultiHeadAttention, gradients: AttentionGradients
    ) throws -> [(parameter: AttentionParameter, value: [Float], gradient: [Float], shape: [Int])] {
        try AttentionParameter.allCases.compactMap { parameter in
            guard let value = layer.weight(parameter), !frozen.contains(parameter) else { return nil }
            guard let gradient = gradients[parameter] else {
                throw AttentionError.invalidInput(
                    "no gradient for \(parameter.stateDictName); every parameter that is not frozen needs one")
            }
            guard gradient.shape == value.shape else {
                throw AttentionError.invalidShape(
                    "\(parameter.stateDictName) gradient shape \(gradient.shape) must equal the parameter's, \(value.shape)")
            }
            return (parameter, value.scalars, gradient.scalars, value.shape)
        }
    }

    /// Replaces the parameters with `values` once all of them are known to be finite.
    static func apply(_ values: [(AttentionParameter, Tensor)], to layer: inout MultiHeadAttention) throws {
        for (parameter, value) in values {
            guard MultiHeadAttention.allFinite(value.scalars) else {
                throw AttentionError.invalidInput(
                    "the step would make \(parameter.stateDictName) NaN or ±inf; lower the learning rate "
                        + "or clip the gradients (the layer is unchanged)")
            }
        }
        var updated = layer
        for (parameter, value) in values { try updated.setWeight(value, for: parameter) }
        layer = updated
    }
}

/// Stochastic gradient descent as `torch.optim.SGD` (maximize off):
///
///     g ← ∇ + weightDecay · θ
///     b ← g (first step), else b ← momentum · b + (1 − dampening) · g     (when momentum ≠ 0)
///     g ← g + momentum · b (nesterov), else g ← b                           (when momentum ≠ 0)
///     θ ← θ − learningRate · g
public struct SGD: AttentionOptimizer {
    /// Settable between steps, as a scheduler sets `param_groups[0]["lr"]` in PyTorch.
    public var learningRate: Float
    public let momentum: Float
    public let dampening: Float
    public let weightDecay: Float
    public let nesterov: Bool
    public var frozen: Set<AttentionParameter>
    /// The momentum buffer `b` of each parameter stepped with momentum so far.
    public private(set) var momentumBuffers: [AttentionParameter: Tensor] = [:]

    /// PyTorch's defaults: `lr = 1e-3`, no momentum, dampening or weight decay.
    ///
    /// - Throws: ``AttentionError/invalidConfiguration(_:)`` naming the value for a negative or
    ///   non-finite `learningRate`, `momentum` or `weightDecay`, a non-finite `dampening`, or
    ///   `nesterov` without momentum or with dampening (PyTorch's rules).
    public init(
        learningRate: Float = 1e-3, momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0,
        nesterov: Bool = false, frozen: Set<AttentionParameter> = []
    ) throws {
        for (name, value) in [("learningRate", learningRate), ("momentum", momentum), ("weightDecay", weightDecay)]
        where !(value.isFinite && value >= 0) {
            throw AttentionError.invalidConfiguration("\(name) (\(value)) must be finite and >= 0")
        }
        guard dampening.isFinite else {
            throw AttentionError.invalidConfiguration("dampening (\(dampening)) must be finite")
        }
        if nesterov && (momentum <= 0 || dampening != 0) {
            throw AttentionError.invalidConfiguration(
                "nesterov needs momentum > 0 and dampening 0 (momentum \(momentum), dampening \(dampening))")
        }
        (self.learningRate, self.momentum, self.dampening) = (learningRate, momentum, dampening)
        (self.weightDecay, self.nesterov, self.frozen) = (weightDecay, nesterov, frozen)
    }

    public mutating func update(_ layer: inout MultiHeadAttention, with gradients: AttentionGradients) throws {
        // `x + α·y` as one fused multiply-add, as PyTorch's vectorised `add(_:alpha:)` computes it.
        var values: [(AttentionParameter, Tensor)] = [], buffers = momentumBuffers
        for (parameter, value, gradient, shape) in try trainedParameters(of: layer, gradients: gradients) {
            var g = gradient
            if weightDecay != 0 {
                for i in g.indices { g[i] = g[i].addingProduct(weightDecay, value[i]) }
            }
            if momentum != 0 {
                var b: [Float]
                if let previous = buffers[parameter]?.scalars {
                    b = previous
                    for i in b.indices { b[i] = (b[i] * momentum).addingProduct(1 - dampening, g[i]) }
                } else {
                    b = g
                }
                buffers[parameter] = try Tensor(shape: shape, scalars: b)
                if nesterov {
                    for i in g.indices { g[i] = g[i].addingProduct(momentum, b[i]) }
                } else {
                    g = b
                }
            }
            var θ = value
            for i in θ.indices { θ[i] = θ[i].addingProduct(-learningRate, g[i]) }
            values.append((parameter, try Tensor(shape: shape, scalars: θ)))
        }
        try Self.apply(values, to: &layer)
        momentumBuffers = buffers
    }

    /// Writes the hyperparameters (metadata) and the momentum buffers
    /// (`momentum_buffer.<state-dict name>`) as safetensors.
    public func save(to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for (parameter, buffer) in momentumBuffers { tensors["momentum_buffer." + parameter.stateDictName] = buffer }
        try SafeTensorsFile.write(tensors, metadata: OptimizerState.metadata(kind: "sgd", frozen: frozen, values: [
            "learning_rate": "\(learningRate)", "momentum": "\(momentum)", "dampening": "\(dampening)",
            "weight_decay": "\(weightDecay)", "nesterov": "\(nesterov)",
        ]), to: url)
    }

    /// An optimizer as ``save(to:)`` left it: the same hyperparameters and buffers, so the next
    /// step is the one the saved run would have taken.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` naming what is missing or malformed.
    public static func load(from url: URL) throws -> SGD {
        let state = try OptimizerState(url: url, kind: "sgd")
        var optimizer = try SGD(
            learningRate: try state.float("learning_rate"), momentum: try state.float("momentum"),
            dampening: try state.float("dampening"), weightDecay: try state.float("weight_decay"),
            nesterov: try state.bool("nesterov"), frozen: try state.frozen())
        optimizer.momentumBuffers = try state.tensors(prefix: "momentum_buffer.")
        return optimizer
    }
}

/// Adam with decoupled weight decay as `torch.optim.AdamW` (amsgrad off):
///
///     θ ← θ · (1 − learningRate · weightDecay)
///     m ← m + (1 − β₁) · (∇ − m);   v ← β₂ · v + (1 − β₂) · ∇²
///     θ ← θ − (learningRate / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + eps)
///
/// with `t` the step count, from 1 (one count for every parameter, as PyTorch keeps per
/// parameter but steps together).
public struct AdamW: AttentionOptimizer {
    /// Settable between steps, as a scheduler sets `param_groups[0]["lr"]` in PyTorch.
    public var learningRate: Float
    public let betas: (Float, Float)
    public let eps: Float
    public let weightDecay: Float
    public var frozen: Set<AttentionParameter>
    /// Steps taken.
    public private(set) var step = 0
    /// `m` and `v` of each parameter stepped so far.
    public private(set) var firstMoments: [AttentionParameter: Tensor] = [:]
    public private(set) var secondMoments: [AttentionParameter: Tensor] = [:]

    /// PyTorch's defaults: `lr = 1e-3`, `betas = (0.9, 0.999)`, `eps = 1e-8`, `weight_decay = 1e-2`.
    ///
    /// - Throws: ``AttentionError/invalidConfiguration(_:)`` naming the value for a negative or
    ///   non-finite `learningRate`, `eps` or `weightDecay`, or a beta outside `[0, 1)`.
    public init(
        learningRate: Float = 1e-3, betas: (Float, Float) = (0.9, 0.999), eps: Float = 1e-8,
        weightDecay: Float = 1e-2, frozen: Set<AttentionParameter> = []
    ) throws {
        for (name, value) in [("learningRate", learningRate), ("eps", eps), ("weightDecay", weightDecay)]
        where !(value.isFinite && value >= 0) {
            throw AttentionError.invalidConfiguration("\(name) (\(value)) must be finite and >= 0")
        }
        for (name, value) in [("betas.0", betas.0), ("betas.1", betas.1)] where !(value >= 0 && value < 1) {
            throw AttentionError.invalidConfiguration("\(name) (\(value)) must be in [0, 1)")
        }
        (self.learningRate, self.betas, self.eps) = (learningRate, betas, eps)
        (self.weightDecay, self.frozen) = (weightDecay, frozen)
    }

    public mutating func update(_ layer: inout MultiHeadAttention, with gradients: AttentionGradients) throws {
        let t = step + 1
        // PyTorch forms the scalar factors in double (Python floats), then rounds them once.
        let lr = Double(learningRate), (beta1, beta2) = (Double(betas.0), Double(betas.1))
        let decay = Float(1 - lr * Double(weightDecay))
        let firstWeight = Float(1 - beta1), secondWeight = Float(1 - beta2)
        let stepSize = Float(lr / (1 - pow(beta1, Double(t))))
        let correction2 = Float((1 - pow(beta2, Double(t))).squareRoot())
        var values: [(AttentionParameter, Tensor)] = []
        var firsts = firstMoments, seconds = secondMoments
        for (parameter, value, gradient, shape) in try trainedParameters(of: layer, gradients: gradients) {
            var m = firsts[parameter]?.scalars ?? [Float](repeating: 0, count: value.count)
            var v = seconds[parameter]?.scalars ?? [Float](repeating: 0, count: value.count)
            var θ = value
            for i in θ.indices {
                if weightDecay != 0 { θ[i] = θ[i] * decay }
                m[i] = Self.lerp(m[i], gradient[i], weight: firstWeight)
                // As PyTorch's CPU kernels compute them (checked against torch 2.15 bit for bit):
                // addcmul fuses self + (value · t1) · t2, addcdiv rounds self + (value · t1) / t2
                // step by step, and a tensor divided by a Python float divides by it in fp32.
                v[i] = (v[i] * Float(beta2)).addingProduct(secondWeight * gradient[i], gradient[i])
                let denominator = v[i].squareRoot() / correction2 + eps
                θ[i] = θ[i] + (-stepSize) * m[i] / denominator
            }
            firsts[parameter] = try Tensor(shape: shape, scalars: m)
            seconds[parameter] = try Tensor(shape: shape, scalars: v)
            values.append((parameter, try Tensor(shape: shape, scalars: θ)))
        }
        try Self.apply(values, to: &layer)
        (firstMoments, secondMoments, step) = (firsts, seconds, t)
    }

    /// `torch.lerp` as its vector kernel computes it: `start + weight · (end − start)` for
    /// weights below ½, else `end + (weight − 1) · (end − start)`, one fused multiply-add.
    @inline(__always)
    static func lerp(_ start: Float, _ end: Float, weight: Float) -> Float {
        weight < 0.5 ? start.addingProduct(weight, end - start) : end.addingProduct(weight - 1, end - start)
    }

    /// Writes the hyperparameters and the step count (metadata) and `m`, `v`
    /// (`exp_avg.<state-dict name>`, `exp_avg_sq.<state-dict name>`) as safetensors.
    public func save(to url: URL) throws {
        var tensors: [String: Tensor] = [:]
        for (parameter, m) in firstMoments { tensors["exp_avg." + parameter.stateDictName] = m }
        for (parameter, v) in secondMoments { tensors["exp_avg_sq." + parameter.stateDictName] = v }
        try SafeTensorsFile.write(tensors, metadata: OptimizerState.metadata(kind: "adamw", frozen: frozen, values: [
            "learning_rate": "\(learningRate)", "beta1": "\(betas.0)", "beta2": "\(betas.1)", "eps": "\(eps)",
            "weight_decay": "\(weightDecay)", "step": "\(step)",
        ]), to: url)
    }

    /// An optimizer as ``save(to:)`` left it (hyperparameters, step count, `m` and `v`).
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` naming what is missing or malformed.
    public static func load(from url: URL) throws -> AdamW {
        let state = try OptimizerState(url: url, kind: "adamw")
        var optimizer = try AdamW(
            learningRate: try state.float("learning_rate"), betas: (try state.float("beta1"), try state.float("beta2")),
            eps: try state.float("eps"), weightDecay: try state.float("weight_decay"), frozen: try state.frozen())
        guard let step = Int(try state.string("step")), step >= 0 else {
            throw AttentionError.invalidFile("\(url.lastPathComponent): metadata step must be an integer >= 0")
        }
        optimizer.step = step
        optimizer.firstMoments = try state.tensors(prefix: "exp_avg.")
        optimizer.secondMoments = try state.tensors(prefix: "exp_avg_sq.")
        guard Set(optimizer.firstMoments.keys) == Set(optimizer.secondMoments.keys) else {
            throw AttentionError.invalidFile("\(url.lastPathComponent): exp_avg and exp_avg_sq must name the same parameters")
        }
        return optimizer
    }
}

/// An optimizer's safetensors file: metadata `optimizer`, `frozen` (comma-separated state-dict
/// names) and the hyperparameters, all strings (floats in Swift's shortest exact form).
struct OptimizerState {
    let file: SafeTensorsFile
    let name: String

    static func metadata(kind: String, frozen: Set<AttentionParameter>, values: [String: String]) -> [String: String] {
        values.merging([
            "optimizer": kind,
            "frozen": AttentionParameter.allCases.filter(frozen.contains).map(\.stateDictName).joined(separator: ","),
        ]) { $1 }
    }

    init(url: URL, kind: String) throws {
        file = try SafeTensorsFile(contentsOf: url)
        name = url.lastPathComponent
        guard file.metadata["optimizer"] == kind else {
            throw AttentionError.invalidFile(
                "\(name): metadata optimizer is \(file.metadata["optimizer"].map { "\"\($0)\"" } ?? "missing"), "
                    + "expected \"\(kind)\"")
        }
    }

    func string(_ key: String) throws -> String {
        guard let value = file.metadata[key] else {
            throw AttentionError.invalidFile("\(name): metadata \(key) is missing")
        }
        return value
    }

    func float(_ key: String) throws -> Float {
        guard let value = Float(try string(key)) else {
            throw AttentionError.invalidFile("\(name): metadata \(key) (\(try string(key))) is not a number")
        }
        return value
    }

    func bool(_ key: String) throws -> Bool {
        guard let value = Bool(try string(key)) else {
            throw AttentionError.invalidFile("\(name): metadata \(key) (\(try string(key))) must be true or false")
        }
        return value
    }

    func frozen() throws -> Set<AttentionParameter> {
        let names = try string("frozen").split(separator: ",").map(String.init)
        return Set(try names.map { name in
            guard let parameter = AttentionParameter(rawValue: name) else {
                throw AttentionError.invalidFile("\(self.name): frozen names \(name), not a parameter")
            }
            return parameter
        })
    }

    /// Every tensor named `prefix + <state-dict name>`, by parameter.
    func tensors(prefix: String) throws -> [AttentionParameter: Tensor] {
        var result: [AttentionParameter: Tensor] = [:]
        for parameter in AttentionParameter.allCases where file.contains(prefix + parameter.stateDictName) {
            result[parameter] = try file.tensor(prefix + parameter.stateDictName)
        }
        return result
    }
}
