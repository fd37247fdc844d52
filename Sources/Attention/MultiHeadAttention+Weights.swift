/// The learnable parameters of ``MultiHeadAttention``, named as in a PyTorch state dict.
public enum AttentionParameter: String, Sendable, CaseIterable {
    case qProj = "q_proj.weight"
    case kProj = "k_proj.weight"
    case vProj = "v_proj.weight"
    case outProj = "out_proj.weight"
    case sinkStates = "sink_states"

    /// The PyTorch state-dict name, e.g. `"q_proj.weight"`.
    public var stateDictName: String { rawValue }

    var streamIndex: Int { Self.allCases.firstIndex(of: self)! }
}

extension MultiHeadAttention {
    /// The shape `parameter` must have under `config`, or `nil` when the configuration has no
    /// such parameter (`sinkStates` without sinks).
    public func expectedShape(of parameter: AttentionParameter) -> [Int]? {
        let d = config.dModel, kv = config.numKVHeads * config.headDim
        switch parameter {
        case .qProj, .outProj: return [d, d]
        case .kProj, .vProj: return [kv, d]
        case .sinkStates: return config.useAttentionSinks ? [config.numAttentionSinks, d] : nil
        }
    }

    /// The current value of `parameter` (`nil` for `sinkStates` without sinks).
    public func weight(_ parameter: AttentionParameter) -> Tensor? {
        switch parameter {
        case .qProj: return qProj
        case .kProj: return kProj
        case .vProj: return vProj
        case .outProj: return outProj
        case .sinkStates: return sinkStates
        }
    }

    /// Replaces one parameter.
    ///
    /// - Throws: ``AttentionError/invalidShape(_:)`` when `tensor`'s shape differs from
    ///   ``expectedShape(of:)`` (or the configuration has no such parameter), and
    ///   ``AttentionError/invalidInput(_:)`` when it holds NaN or ±∞; the layer is then unchanged.
    public mutating func setWeight(_ tensor: Tensor, for parameter: AttentionParameter) throws {
        guard let expected = expectedShape(of: parameter) else {
            throw AttentionError.invalidShape(
                "\(parameter.stateDictName) cannot be set: this configuration has useAttentionSinks = false")
        }
        guard tensor.shape == expected else {
            throw AttentionError.invalidShape(
                "\(parameter.stateDictName) shape \(tensor.shape) must be \(expected) for dModel \(config.dModel), "
                    + "nHeads \(config.nHeads), numKVHeads \(config.numKVHeads)"
                    + (parameter == .sinkStates ? ", numAttentionSinks \(config.numAttentionSinks)" : ""))
        }
        try Self.requireFinite(tensor, name: parameter.stateDictName)
        switch parameter {
        case .qProj: qProj = tensor
        case .kProj: kProj = tensor
        case .vProj: vProj = tensor
        case .outProj: outProj = tensor
        case .sinkStates: sinkStates = tensor
        }
        if parameter == .kProj || parameter == .vProj || parameter == .sinkStates {
            refreshProjectedSinks()
        }
    }

    /// Throws ``AttentionError/invalidInput(_:)`` naming the first NaN or ±∞ of `tensor`.
    ///
    /// Inputs and weights must be finite: a NaN that reached the kernels would spread through
    /// every product it meets (even `0 · NaN`, for a hidden key), so it is rejected at the door.
    static func requireFinite(_ tensor: Tensor, name: String) throws {
        guard !allFinite(tensor.scalars), let index = tensor.scalars.firstIndex(where: { !$0.isFinite }) else {
            return
        }
        var position: [Int] = []
        var rest = index
        for extent in tensor.shape.reversed() {
            position.insert(rest % extent, at: 0)
            rest /= extent
        }
        throw AttentionError.invalidInput(
            "\(name)\(position) (\(tensor.scalars[index])) must be finite; NaN and ±inf are rejected")
    }

    /// Whether every element is finite, in one SIMD pass: `x · 0` is `±0` for finite `x` and
    /// NaN for NaN and ±∞, and NaN survives the sum. (`firstIndex(where:)` tests one element
    /// at a time: 0.6 % of a 1,024-token forward, on one thread.)
    static func allFinite(_ scalars: [Float]) -> Bool {
        scalars.withUnsafeBufferPointer { scalars in
            let lanes = 16
            var sum = SIMD16<Float>()
            var i = 0
            while i + lanes <= scalars.count {
                sum += UnsafeRawPointer(scalars.baseAddress! + i).loadUnaligned(as: SIMD16<Float>.self) * 0
                i += lanes
            }
            while i < scalars.count {
                sum[0] += scalars[i] * 0
                i += 1
            }
            return !sum.sum().isNaN
        }
    }
}
