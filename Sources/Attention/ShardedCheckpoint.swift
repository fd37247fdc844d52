import Foundation

/// A sharded safetensors checkpoint read through its index, `model.safetensors.index.json`:
///
///     {"metadata": {...}, "weight_map": {"model.layers.0.self_attn.q_proj.weight": "model-00001-of-00004.safetensors", ...}}
///
/// Shards are looked up beside the index, mapped (``SafeTensorsFile/init(contentsOf:)``) when a
/// tensor of theirs is first asked for, and each opened once.
final class ShardedCheckpoint {
    let indexName: String
    let directory: URL
    /// Tensor name → shard file name.
    let weightMap: [String: String]
    private var shards: [String: SafeTensorsFile] = [:]

    /// Every tensor the index lists, sorted.
    var names: [String] { weightMap.keys.sorted() }

    /// Parses and checks the index at `indexURL`.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when it cannot be read, is not JSON, or has
    ///   no `weight_map` object whose values are shard file names (no path separators).
    init(indexURL: URL) throws {
        indexName = indexURL.lastPathComponent
        directory = indexURL.deletingLastPathComponent()
        let bytes: Data
        do {
            bytes = try Data(contentsOf: indexURL)
        } catch {
            throw AttentionError.invalidFile("cannot read \(indexURL.path): \(error.localizedDescription)")
        }
        weightMap = try Self.parseWeightMap(bytes, name: indexName)
    }

    /// The `weight_map` of an index's bytes.
    static func parseWeightMap(_ bytes: Data, name: String) throws -> [String: String] {
        func fail(_ message: String) -> AttentionError { .invalidFile("index \(name): \(message)") }
        let json: SafeTensorsJSON.Value
        do {
            json = try SafeTensorsJSON.parse([UInt8](bytes))
        } catch let failure as SafeTensorsJSON.Failure {
            throw fail("not valid JSON: \(failure.message) at byte \(failure.offset)")
        }
        guard case .object(let members) = json else { throw fail("must be a JSON object, not \(json.kindName)") }
        guard let map = members.first(where: { $0.key == "weight_map" })?.value else {
            throw fail("has no \"weight_map\"")
        }
        guard case .object(let entries) = map else { throw fail("\"weight_map\" must be an object, not \(map.kindName)") }
        var result: [String: String] = [:]
        for (tensor, value) in entries {
            guard case .string(let shard) = value else {
                throw fail("\"weight_map\" entry \"\(tensor)\" must name a shard file, not \(value.kindName)")
            }
            guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                throw fail("\"weight_map\" entry \"\(tensor)\" names \"\(shard)\"; a shard must be a file name beside the index")
            }
            guard result.updateValue(shard, forKey: tensor) == nil else {
                throw fail("\"weight_map\" lists \"\(tensor)\" twice")
            }
        }
        return result
    }

    /// The tensor called `name`, from its shard.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when the index does not list it, its shard
    ///   cannot be read or is malformed, or the shard does not hold it.
    func tensor(_ name: String) throws -> Tensor {
        guard let shardName = weightMap[name] else {
            throw AttentionError.invalidFile("index \(indexName) does not list tensor \"\(name)\"")
        }
        if shards[shardName] == nil {
            shards[shardName] = try SafeTensorsFile(contentsOf: directory.appendingPathComponent(shardName))
        }
        guard let shard = shards[shardName], shard.contains(name) else {
            throw AttentionError.invalidFile(
                "index \(indexName) puts tensor \"\(name)\" in \(shardName), which does not hold it")
        }
        return try shard.tensor(name)
    }
}
