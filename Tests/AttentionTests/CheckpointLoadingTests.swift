import Foundation
import XCTest
@testable import Attention

/// Hugging Face names, sharded checkpoints through `model.safetensors.index.json`, and
/// memory-mapped loading.
final class CheckpointLoadingTests: XCTestCase {
    let prefix = "model.layers.1.self_attn."
    let gqaSinks = try! AttentionConfig(dModel: 32, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                        useGQA: true, gqaGroups: 2)

    func testHuggingFaceNamesRoundTrip() throws {
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 3)
        let names = Set(layer.stateDict(prefix: prefix, naming: .huggingFace).keys)
        XCTAssertEqual(names, Set(["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "sink_states"]
            .map { prefix + $0 }))
        let url = temporaryURL()
        defer { try? FileManager.default.removeItem(at: url) }
        try layer.saveWeights(to: url, prefix: prefix, naming: .huggingFace)
        var loaded = try MultiHeadAttention(config: gqaSinks, seed: 4)
        try loaded.loadWeights(from: url, prefix: prefix, naming: .huggingFace)
        assertSameWeights(loaded, layer)
        // The same file under PyTorch's names lacks out_proj.weight, and says where o_proj is.
        assertLoadFails(loaded, AttentionError.invalidFile,
                        mentioning: ["tensor \"\(prefix)out_proj.weight\" is missing"]) {
            try $0.loadWeights(from: url, prefix: prefix)
        }
    }

    /// Tensors of a Hugging Face attention module this layer has no parameter for are refused by
    /// name, and nothing is loaded.
    func testHuggingFaceTensorsThisLayerCannotTakeAreRefused() throws {
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 5)
        for (extra, shape, reason) in [("q_proj.bias", [32], "no biases"), ("o_proj.bias", [32], "no biases"),
                                       ("q_norm.weight", [8], "no QK-norm"), ("k_norm.weight", [8], "no QK-norm"),
                                       ("sinks", [4], "no logit sinks")] {
            var tensors = layer.stateDict(prefix: prefix, naming: .huggingFace)
            tensors[prefix + extra] = randomTensor(shape, seed: 6)
            assertLoadFails(layer, AttentionError.invalidFile,
                            mentioning: ["tensor \"\(prefix + extra)\" is in the file", reason, "would change the results"]) {
                try $0.loadWeights(from: SafeTensorsFile(data: SafeTensorsFile.encode(tensors)), prefix: prefix,
                                   naming: .huggingFace)
            }
        }
    }

    /// Two shards, the layer's tensors split between them among another layer's, and the index.
    private func writeShardedCheckpoint(_ layer: MultiHeadAttention, in directory: URL) throws -> URL {
        let tensors = layer.stateDict(prefix: prefix, naming: .huggingFace)
        let other = try MultiHeadAttention(config: gqaSinks, seed: 99).stateDict(prefix: "model.layers.0.self_attn.",
                                                                                 naming: .huggingFace)
        var shards: [String: [String: Tensor]] = ["model-00001-of-00002.safetensors": other, "model-00002-of-00002.safetensors": [:]]
        for (index, name) in tensors.keys.sorted().enumerated() {
            shards[index % 2 == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors"]![name] = tensors[name]
        }
        var weightMap: [String: String] = [:]
        for (file, contents) in shards {
            try SafeTensorsFile.write(contents, to: directory.appendingPathComponent(file))
            for name in contents.keys { weightMap[name] = file }
        }
        let index = directory.appendingPathComponent("model.safetensors.index.json")
        let json = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 0], "weight_map": weightMap])
        try json.write(to: index)
        return index
    }

    func testShardedCheckpointLoadsThroughItsIndex() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("shards-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 7)
        let index = try writeShardedCheckpoint(layer, in: directory)
        var loaded = try MultiHeadAttention(config: gqaSinks, seed: 8)
        try loaded.loadWeights(from: index, prefix: prefix, naming: .huggingFace)
        assertSameWeights(loaded, layer)

        // A shard gone, a tensor put in the wrong shard, malformed indexes: errors naming them.
        let second = directory.appendingPathComponent("model-00002-of-00002.safetensors")
        let saved = try Data(contentsOf: second)
        try FileManager.default.removeItem(at: second)
        assertLoadFails(loaded, AttentionError.invalidFile, mentioning: ["cannot read", "model-00002-of-00002.safetensors"]) {
            try $0.loadWeights(from: index, prefix: self.prefix, naming: .huggingFace)
        }
        try saved.write(to: second)
        var map = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: index)) as? [String: Any])
        var weightMap = try XCTUnwrap(map["weight_map"] as? [String: String])
        let moved = prefix + "q_proj.weight"
        weightMap[moved] = weightMap[moved] == "model-00001-of-00002.safetensors"
            ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors"
        map["weight_map"] = weightMap
        try JSONSerialization.data(withJSONObject: map).write(to: index)
        assertLoadFails(loaded, AttentionError.invalidFile, mentioning: ["puts tensor \"\(moved)\"", "which does not hold it"]) {
            try $0.loadWeights(from: index, prefix: self.prefix, naming: .huggingFace)
        }
        for (json, fragment) in [("{\"metadata\": {}}", "has no \"weight_map\""), ("[1]", "must be a JSON object"),
                                 ("{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "a shard must be a file name beside the index"),
                                 ("{\"weight_map\": {\"a\": 3}}", "must name a shard file, not a number"),
                                 ("{\"weight_map\": ", "not valid JSON")] {
            try Data(json.utf8).write(to: index)
            assertLoadFails(loaded, AttentionError.invalidFile, mentioning: ["index model.safetensors.index.json", fragment]) {
                try $0.loadWeights(from: index, prefix: self.prefix, naming: .huggingFace)
            }
        }
    }

    /// `ATTENTION_MEASURE_MAPPED_LOAD=1`: writes a 1 GB shard (40 layers of dModel 1024, each
    /// with a `[4096, 1024]` MLP weight beside its attention), loads one layer from it mapped and,
    /// for contrast, from the file read whole, and prints the peak resident memory of each load
    /// (Linux `VmHWM`, reset before each); skipped otherwise (it writes a gigabyte).
    func testOneLayerOfAGigabyteShardLoadsWithoutReadingIt() throws {
        guard ProcessInfo.processInfo.environment["ATTENTION_MEASURE_MAPPED_LOAD"] == "1" else {
            throw XCTSkip("set ATTENTION_MEASURE_MAPPED_LOAD=1 to write a 1 GB shard and measure")
        }
        let config = try AttentionConfig(dModel: 1024, nHeads: 16, useGQA: true, gqaGroups: 4)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("big-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        do {
            var tensors: [String: Tensor] = [:]
            for layerIndex in 0..<40 {
                let layer = try MultiHeadAttention(config: config, seed: UInt64(layerIndex))
                tensors.merge(layer.stateDict(prefix: "model.layers.\(layerIndex).self_attn.", naming: .huggingFace)) { $1 }
                tensors["model.layers.\(layerIndex).mlp.up_proj.weight"] = Tensor(zeros: [4096, 1024])
            }
            try SafeTensorsFile.write(tensors, to: url)
        }
        let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int)
        XCTAssertGreaterThan(size, 1_000_000_000)
        var layer = try MultiHeadAttention(config: config, seed: 1000)
        let prefix = "model.layers.17.self_attn."
        let (mappedBefore, mappedPeak) = try peakResidentBytes {
            try layer.loadWeights(from: url, prefix: prefix, naming: .huggingFace)
        }
        let (readBefore, readPeak) = try peakResidentBytes {
            try layer.loadWeights(from: SafeTensorsFile(data: Data(contentsOf: url)), prefix: prefix, naming: .huggingFace)
        }
        let mebibyte = 1_048_576
        print("one layer of a \(size / mebibyte) MiB shard: mapped, resident \(mappedBefore / mebibyte) MiB before, "
              + "peak \(mappedPeak / mebibyte) MiB; read whole, \(readBefore / mebibyte) MiB before, peak \(readPeak / mebibyte) MiB")
        XCTAssertLessThan(mappedPeak - mappedBefore, 100 * mebibyte)
        XCTAssertGreaterThan(readPeak - readBefore, size / 2, "the contrast: reading the file whole")
    }

    /// Resident bytes before `body` and the peak while it ran (`VmHWM` after resetting it
    /// through `/proc/self/clear_refs`).
    private func peakResidentBytes(_ body: () throws -> Void) throws -> (before: Int, peak: Int) {
        func status(_ key: String) throws -> Int {
            let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
            let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix(key) })
            return try XCTUnwrap(Int(line.split(separator: " ")[1])) * 1024
        }
        try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
        let before = try status("VmRSS:")
        try body()
        return (before, try status("VmHWM:"))
    }
}
