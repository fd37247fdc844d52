import Foundation

/// Weights from and to PyTorch: state-dict names, optional prefix, safetensors files.
///
/// A layer's parameters are named as in the state dict of the PyTorch module it mirrors —
/// `q_proj.weight`, `k_proj.weight`, `v_proj.weight`, `out_proj.weight` (`nn.Linear` layout
/// `[out, in]`) and, with sinks, `sink_states` `[S, dModel]` — each preceded by `prefix`, the
/// module's path in a larger model, e.g. `"layers.3.attn."` (note the trailing dot).
///
/// Loading is strict where a silent wrong answer is possible and relaxed elsewhere, so one file
/// can hold a whole model:
/// - every parameter this configuration has must be present under `prefix`, with exactly the
///   shape ``expectedShape(of:)`` gives;
/// - a tensor under `prefix` that belongs to a projection but is not its weight
///   (`q_proj.bias`, …) throws: this layer has no biases, and dropping one would change the
///   results; so does `sink_states` when the configuration has no sinks;
/// - every other tensor in the file is ignored.
///
/// Loading is all-or-nothing: everything is checked before the first weight is replaced.
extension MultiHeadAttention {
    /// The parameters under their PyTorch state-dict names, each preceded by `prefix`.
    ///
    /// `sink_states` is included only when the configuration has sinks.
    public func stateDict(prefix: String = "") -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for parameter in AttentionParameter.allCases {
            if let tensor = weight(parameter) { result[prefix + parameter.stateDictName] = tensor }
        }
        return result
    }

    /// Replaces every parameter from a state dict such as ``stateDict(prefix:)`` returns.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` naming the key when a parameter is missing
    ///   or a bias (or `sink_states` without sinks) is present under `prefix`;
    ///   ``AttentionError/invalidShape(_:)`` naming the key and both shapes when a shape differs
    ///   from ``expectedShape(of:)``. The layer is then unchanged.
    public mutating func loadStateDict(_ tensors: [String: Tensor], prefix: String = "") throws {
        try load(names: tensors.keys.sorted(), prefix: prefix, source: "state dict",
                 problem: AttentionError.invalidInput) { name in tensors[name]! }
    }

    /// Replaces every parameter from a safetensors file already read (F32, F16 or BF16).
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` naming the tensor when a parameter is
    ///   missing or a bias (or `sink_states` without sinks) is present under `prefix`;
    ///   ``AttentionError/invalidShape(_:)`` naming the tensor and both shapes when a shape
    ///   differs from ``expectedShape(of:)``. The layer is then unchanged.
    public mutating func loadWeights(from file: SafeTensorsFile, prefix: String = "") throws {
        try load(names: file.names, prefix: prefix, source: "file",
                 problem: AttentionError.invalidFile) { name in try file.tensor(name) }
    }

    /// Replaces every parameter from the safetensors file at `url` (F32, F16 or BF16), for
    /// example one written by `safetensors.torch.save_file(module.state_dict(), path)`.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when the file cannot be read, is malformed
    ///   (see ``SafeTensorsFile``), lacks a parameter or holds a bias under `prefix`;
    ///   ``AttentionError/invalidShape(_:)`` when a shape differs from ``expectedShape(of:)``.
    ///   The layer is then unchanged.
    public mutating func loadWeights(from url: URL, prefix: String = "") throws {
        try loadWeights(from: SafeTensorsFile(contentsOf: url), prefix: prefix)
    }

    /// Writes the parameters to a safetensors file at `url` as F32, under their state-dict
    /// names preceded by `prefix`; PyTorch reads it with `safetensors.torch.load_file`.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when the file cannot be written.
    public func saveWeights(to url: URL, prefix: String = "", metadata: [String: String] = [:]) throws {
        try SafeTensorsFile.write(stateDict(prefix: prefix), metadata: metadata, to: url)
    }

    private mutating func load(
        names: [String], prefix: String, source: String,
        problem: (String) -> AttentionError, tensor: (String) throws -> Tensor
    ) throws {
        let present = Set(names)
        // A projection's bias, or sinks the configuration lacks: loading would drop them.
        for name in names where name.hasPrefix(prefix) {
            let local = String(name.dropFirst(prefix.count))
            if ["q_proj.", "k_proj.", "v_proj.", "out_proj."].contains(where: local.hasPrefix),
               AttentionParameter(rawValue: local) == nil {
                throw problem("tensor \"\(name)\" is in the \(source), but this layer has only the projection "
                    + "weights (no biases); loading without it would change the results")
            }
            if local == AttentionParameter.sinkStates.stateDictName && !config.useAttentionSinks {
                throw problem("tensor \"\(name)\" is in the \(source), but this configuration has "
                    + "useAttentionSinks = false; make the config with useAttentionSinks: true")
            }
        }

        var loaded: [(AttentionParameter, Tensor)] = []
        for parameter in AttentionParameter.allCases {
            guard let expected = expectedShape(of: parameter) else { continue }
            let name = prefix + parameter.stateDictName
            guard present.contains(name) else {
                throw problem("tensor \"\(name)\" is missing from the \(source)"
                    + Self.prefixHint(for: parameter, names: names, prefix: prefix))
            }
            let value = try tensor(name)
            guard value.shape == expected else {
                throw AttentionError.invalidShape(
                    "tensor \"\(name)\" shape \(value.shape) must be \(expected) for dModel \(config.dModel), "
                        + "nHeads \(config.nHeads), numKVHeads \(config.numKVHeads)"
                        + (parameter == .sinkStates ? ", numAttentionSinks \(config.numAttentionSinks)" : ""))
            }
            try Self.requireFinite(value, name: "tensor \"\(name)\"")
            loaded.append((parameter, value))
        }
        for (parameter, value) in loaded {
            try setWeight(value, for: parameter)  // shapes and values checked above: cannot throw
        }
    }

    /// `"; it holds \"model.q_proj.weight\": try prefix \"model.\""` when another prefix fits.
    private static func prefixHint(for parameter: AttentionParameter, names: [String], prefix: String) -> String {
        let suffix = parameter.stateDictName
        let prefixes = names.compactMap { name -> String? in
            guard name.hasSuffix(suffix) else { return nil }
            let candidate = String(name.dropLast(suffix.count))
            return candidate.isEmpty || candidate.hasSuffix(".") ? candidate : nil
        }
        guard !prefixes.isEmpty else {
            return names.isEmpty ? " (it holds no tensors)" : " (it holds \(names.count) tensor(s), none named *\(suffix))"
        }
        let shown = prefixes.prefix(3).map { "\"\($0)\"" }.joined(separator: ", ")
        return " (searched with prefix \"\(prefix)\"; tensors named *\(suffix) exist under prefix \(shown)"
            + (prefixes.count > 3 ? ", …" : "") + ")"
    }
}
