extension AttentionGradients {
    /// Gradients assembled from tensors: `input` `[batch, seq, dModel]` and one tensor per
    /// parameter, e.g. gradients computed elsewhere and handed to an optimizer.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` naming the first tensor that holds NaN or ±∞.
    public init(input: Tensor, parameters: [AttentionParameter: Tensor]) throws {
        try MultiHeadAttention.requireFinite(input, name: "input gradient")
        for parameter in AttentionParameter.allCases {
            if let tensor = parameters[parameter] {
                try MultiHeadAttention.requireFinite(tensor, name: "\(parameter.stateDictName) gradient")
            }
        }
        self.init(input: input, checkedParameters: parameters)
    }

    /// The parameters this value holds a gradient for.
    public var parameters: [AttentionParameter] { AttentionParameter.allCases.filter { self[$0] != nil } }

    /// Every gradient, the input's included, times `factor` (e.g. `1 / microBatches` to turn a
    /// sum over micro-batches into their mean).
    public func scaled(by factor: Float) -> AttentionGradients {
        var parameters: [AttentionParameter: Tensor] = [:]
        for parameter in self.parameters { parameters[parameter] = Self.scale(self[parameter]!, by: factor) }
        return AttentionGradients(input: Self.scale(input, by: factor), checkedParameters: parameters)
    }

    private static func scale(_ tensor: Tensor, by factor: Float) -> Tensor {
        var result = tensor
        for i in result.scalars.indices { result.scalars[i] *= factor }
        return result
    }

    /// The element-wise sum of two gradients of the same input shape (e.g. of two losses over
    /// the same `x`): every parameter's gradients and the input gradients added.
    ///
    /// - Throws: ``AttentionError/invalidShape(_:)`` when they hold different parameters or any
    ///   two shapes differ. For micro-batches of one batch, use ``accumulating(_:)``.
    public static func + (lhs: AttentionGradients, rhs: AttentionGradients) throws -> AttentionGradients {
        guard lhs.input.shape == rhs.input.shape else {
            throw AttentionError.invalidShape(
                "input gradient shapes \(lhs.input.shape) and \(rhs.input.shape) must be equal to add them "
                    + "(accumulating(_:) stacks micro-batches)")
        }
        let sums = try lhs.parameterSums(with: rhs)
        var input = lhs.input
        for i in input.scalars.indices { input.scalars[i] += rhs.input.scalars[i] }
        return AttentionGradients(input: input, checkedParameters: sums)
    }

    /// Gradient accumulation: the gradients of this micro-batch and `other` as those of one
    /// batch holding both — each parameter's gradients added, the input gradients stacked along
    /// the batch axis (`other`'s rows after these). For a loss that sums over the batch rows, the
    /// micro-batches' accumulated gradients equal the whole batch's.
    ///
    /// - Throws: ``AttentionError/invalidShape(_:)`` when the two hold different parameters,
    ///   a parameter's shapes differ, or the input gradients differ in `[seq, dModel]`.
    public func accumulating(_ other: AttentionGradients) throws -> AttentionGradients {
        let sums = try parameterSums(with: other)
        let stacked = try Tensor(shape: [input.shape[0] + other.input.shape[0]] + Array(input.shape.dropFirst()),
                                 scalars: input.scalars + other.input.scalars)
        return AttentionGradients(input: stacked, checkedParameters: sums)
    }

    /// Each parameter's gradients of `self` and `other` added, after checking that both hold
    /// the same parameters of the same shapes and input gradients of the same `[seq, dModel]`.
    private func parameterSums(with other: AttentionGradients) throws -> [AttentionParameter: Tensor] {
        guard parameters == other.parameters else {
            throw AttentionError.invalidShape(
                "gradients of \(parameters.map(\.stateDictName)) cannot accumulate gradients of "
                    + "\(other.parameters.map(\.stateDictName)); both must hold the same parameters")
        }
        guard input.rank == 3, other.input.rank == 3, input.shape.dropFirst() == other.input.shape.dropFirst() else {
            throw AttentionError.invalidShape(
                "input gradient shapes \(input.shape) and \(other.input.shape) must be [batch, seq, dModel] "
                    + "with the same seq and dModel")
        }
        var sums: [AttentionParameter: Tensor] = [:]
        for parameter in parameters {
            var sum = self[parameter]!
            let addend = other[parameter]!
            guard sum.shape == addend.shape else {
                throw AttentionError.invalidShape(
                    "\(parameter.stateDictName) gradient shapes \(sum.shape) and \(addend.shape) must be equal")
            }
            for i in sum.scalars.indices { sum.scalars[i] += addend.scalars[i] }
            sums[parameter] = sum
        }
        return sums
    }

    /// `torch.nn.utils.clip_grad_norm_`: the global 2-norm of the parameter gradients
    /// `‖g‖ = √(Σ_p ‖g_p‖²)` over `parameters` (default: all this value holds; the input
    /// gradient is not a parameter's and is left alone), and those gradients times
    /// `min(1, maxNorm / (‖g‖ + 1e-6))`.
    ///
    /// - Returns: the clipped gradients and `‖g‖` before clipping.
    /// - Throws: ``AttentionError/invalidInput(_:)`` when `maxNorm` is not finite and > 0.
    public func clippedByGlobalNorm(
        maxNorm: Float, parameters chosen: Set<AttentionParameter>? = nil
    ) throws -> (gradients: AttentionGradients, totalNorm: Float) {
        guard maxNorm.isFinite, maxNorm > 0 else {
            throw AttentionError.invalidInput("maxNorm (\(maxNorm)) must be finite and > 0")
        }
        let clipped = parameters.filter { chosen?.contains($0) ?? true }
        // Per-parameter norms first, as PyTorch stacks them, in double.
        let norms = clipped.map { parameter in
            self[parameter]!.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        }
        let total = norms.reduce(0.0) { $0 + $1 * $1 }.squareRoot()
        let coefficient = min(1, Double(maxNorm) / (total + 1e-6))
        var parameters: [AttentionParameter: Tensor] = [:]
        for parameter in self.parameters {
            let tensor = self[parameter]!
            parameters[parameter] = clipped.contains(parameter) && coefficient < 1
                ? Self.scale(tensor, by: Float(coefficient)) : tensor
        }
        return (AttentionGradients(input: input, checkedParameters: parameters), Float(total))
    }
}
