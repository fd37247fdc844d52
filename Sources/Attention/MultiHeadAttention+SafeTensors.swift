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
/// How a checkpoint names a layer's tensors (after its prefix).
public enum WeightNaming: String, Sendable, CaseIterable {
    /// The state-dict names of the PyTorch module this layer mirrors: `q_proj.weight`,
    /// `k_proj.weight`, `v_proj.weight`, `out_proj.weight`, `sink_states`.
    case pytorch
    /// Hugging Face transformers' attention modules (`LlamaAttention`, `MistralAttention`,
    /// `Qwen2Attention`, …, under a prefix such as `"model.layers.3.self_attn."`): `q_proj.weight`,
    /// `k_proj.weight`, `v_proj.weight`, `o_proj.weight`. Those models have no sink tokens; a
    /// layer configured with them keeps the name `sink_states`.
    case huggingFace

    /// The name of `parameter` (without prefix).
    public func name(of parameter: AttentionParameter) -> String {
        switch (self, parameter) {
        case (.huggingFace, .outProj): return "o_proj.weight"
        default: return parameter.stateDictName
        }
    }

    /// Tensor names (without prefix) that belong to this layer's module in such a checkpoint
    /// but that this layer has no parameter for: projection biases, and for Hugging Face
    /// checkpoints QK-norm weights (Qwen3, OLMo 2, Gemma 3) and logit sinks (gpt-oss).
    func unsupportedTensor(_ local: String) -> String? {
        let projections = self == .pytorch ? ["q_proj.", "k_proj.", "v_proj.", "out_proj."]
            : ["q_proj.", "k_proj.", "v_proj.", "o_proj."]
        if projections.contains(where: local.hasPrefix), !AttentionParameter.allCases.contains(where: { name(of: $0) == local }) {
            return "this layer has only the projection weights (no biases)"
        }
        guard self == .huggingFace else { return nil }
        if local == "q_norm.weight" || local == "k_norm.weight" {
            return "this layer has no QK-norm (RMSNorm of each query/key head)"
        }
        if local == "sinks" {
            return "this layer has no logit sinks (gpt-oss's per-head sink logits; its sink tokens are another feature)"
        }
        return nil
    }
}

extension MultiHeadAttention {
    /// The parameters under their names in `naming` (default: PyTorch's state-dict names), each
    /// preceded by `prefix`.
    ///
    /// `sink_states` is included only when the configuration has sinks.
    public func stateDict(prefix: String = "", naming: WeightNaming = .pytorch) -> [String: Tensor] {
        var result: [String: Tensor] = [:]
        for parameter in AttentionParameter.allCases {
            if let tensor = weight(parameter) { result[prefix + naming.name(of: parameter)] = tensor }
        }
        return result
    }

    /// Replaces every parameter from a state dict such as ``stateDict(prefix:)`` returns.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` naming the key when a parameter is missing
    ///   or a bias (or `sink_states` without sinks) is present under `prefix`;
    ///   ``AttentionError/invalidShape(_:)`` naming the key and both shapes when a shape differs
    ///   from ``expectedShape(of:)``. The layer is then unchanged.
    public mutating func loadStateDict(
        _ tensors: [String: Tensor], prefix: String = "", naming: WeightNaming = .pytorch
    ) throws {
        try load(names: tensors.keys.sorted(), prefix: prefix, naming: naming, source: "state dict",
                 problem: AttentionError.invalidInput) { name in tensors[name]! }
    }

    /// Replaces every parameter from a safetensors file already read (F32, F16 or BF16).
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` naming the tensor when a parameter is
    ///   missing or a bias (or `sink_states` without sinks) is present under `prefix`;
    ///   ``AttentionError/invalidShape(_:)`` naming the tensor and both shapes when a shape
    ///   differs from ``expectedShape(of:)``. The layer is then unchanged.
    public mutating func loadWeights(
        from file: SafeTensorsFile, prefix: String = "", naming: WeightNaming = .pytorch
    ) throws {
        try load(names: file.names, prefix: prefix, naming: naming, source: "file",
                 problem: AttentionError.invalidFile) { name in try file.tensor(name) }
    }

    /// Replaces every parameter from the safetensors file at `url` (F32, F16 or BF16), for
    /// example one written by `safetensors.torch.save_file(module.state_dict(), path)`, or from
    /// a sharded checkpoint through its index (`model.safetensors.index.json`, whose
    /// `weight_map` names the shard of each tensor; shards are looked up beside it).
    ///
    /// Files are memory-mapped: only the header and the tensors loaded are read, so one layer
    /// of a multi-GB shard loads in the memory of that layer.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when a file cannot be read, is malformed
    ///   (see ``SafeTensorsFile``; an index without a `weight_map` object of strings), lacks a
    ///   parameter or holds, under `prefix`, a tensor this layer cannot take (a bias; with
    ///   ``WeightNaming/huggingFace`` also QK-norm weights or logit sinks);
    ///   ``AttentionError/invalidShape(_:)`` when a shape differs from ``expectedShape(of:)``.
    ///   The layer is then unchanged.
    public mutating func loadWeights(from url: URL, prefix: String = "", naming: WeightNaming = .pytorch) throws {
        guard url.pathExtension == "json" else {
            return try loadWeights(from: SafeTensorsFile(contentsOf: url), prefix: prefix, naming: naming)
        }
        let index = try ShardedCheckpoint(indexURL: url)
        try load(names: index.names, prefix: prefix, naming: naming, source: "checkpoint \(url.lastPathComponent)",
                 problem: AttentionError.invalidFile) { name in try index.tensor(name) }
    }

    /// Writes the parameters to a safetensors file at `url` as F32, under their names in
    /// `naming` preceded by `prefix`; PyTorch reads it with `safetensors.torch.load_file`.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when the file cannot be written.
    public func saveWeights(
        to url: URL, prefix: String = "", naming: WeightNaming = .pytorch, metadata: [String: String] = [:]
    ) throws {
        try SafeTensorsFile.write(stateDict(prefix: prefix, naming: naming), metadata: metadata, to: url)
    }

    private mutating func load(
        names: [String], prefix: String, naming: WeightNaming, source: String,
        problem: (String) -> AttentionError, tensor: (String) throws -> Tensor
    ) throws {
        let present = Set(names)
        // A tensor of this module the layer cannot take, or sinks the configuration lacks:
        // loading without it would change the results.
        for name in names where name.hasPrefix(prefix) {
            let local = String(name.dropFirst(prefix.count))
            if let reason = naming.unsupportedTensor(local) {
                throw problem("tensor \"\(name)\" is in the \(source), but \(reason); loading without it would "
                    + "change the results")
            }
            if local == AttentionParameter.sinkStates.stateDictName && !config.useAttentionSinks {
                throw problem("tensor \"\(name)\" is in the \(source), but this configuration has "
                    + "useAttentionSinks = false; make the config with useAttentionSinks: true")
            }
        }

        var loaded: [(AttentionParameter, Tensor)] = []
        for parameter in AttentionParameter.allCases {
            guard let expected = expectedShape(of: parameter) else { continue }
            let name = prefix + naming.name(of: parameter)
            guard present.contains(name) else {
                throw problem("tensor \"\(name)\" is missing from the \(source)"
                    + Self.prefixHint(for: naming.name(of: parameter), names: names, prefix: prefix))
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
    private static func prefixHint(for suffix: String, names: [String], prefix: String) -> String {
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
