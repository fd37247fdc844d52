import Foundation
import XCTest
@testable import Attention

/// A fresh path in the temporary directory for a weights file.
func temporaryURL() -> URL {
    FileManager.default.temporaryDirectory.appendingPathComponent("weights-\(UUID()).safetensors")
}

/// Every parameter of `a` and `b` has the same shape and bits.
func assertSameWeights(_ a: MultiHeadAttention, _ b: MultiHeadAttention, file: StaticString = #filePath,
                       line: UInt = #line) {
    for parameter in AttentionParameter.allCases {
        XCTAssertEqual(a.weight(parameter)?.shape, b.weight(parameter)?.shape, "\(parameter)", file: file, line: line)
        XCTAssertEqual(a.weight(parameter)?.scalars.map(\.bitPattern), b.weight(parameter)?.scalars.map(\.bitPattern),
                       "\(parameter)", file: file, line: line)
    }
}

/// Asserts `body` throws an `AttentionError` of case `expected` with a message mentioning
/// every fragment, and leaves `layer` unchanged.
func assertLoadFails(
    _ layer: MultiHeadAttention, _ expected: ErrorCase, mentioning fragments: [String],
    file: StaticString = #filePath, line: UInt = #line,
    _ body: (inout MultiHeadAttention) throws -> Void
) {
    var copy = layer
    assertThrows(expected, containing: fragments, file: file, line: line) { try body(&copy) }
    assertSameWeights(copy, layer, file: file, line: line)
}

/// `MultiHeadAttention` weights to and from safetensors files under PyTorch state-dict names,
/// with and without a prefix: bit-exact round trips, all-or-nothing loading, and errors that
/// name the tensor (and both shapes) for a missing tensor, a wrong shape, a bias or a prefix
/// that does not match.
final class SafeTensorsWeightsTests: XCTestCase {
    let gqaSinks = try! AttentionConfig(dModel: 32, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 2,
                                        useGQA: true, gqaGroups: 2)


    func testSaveThenLoadIsBitExactWithAndWithoutPrefix() throws {
        let source = try MultiHeadAttention(config: gqaSinks, seed: 1)
        let x = randomTensor([2, 5, 32], seed: 9)
        for prefix in ["", "layers.3.attn."] {
            let url = temporaryURL()
            defer { try? FileManager.default.removeItem(at: url) }
            try source.saveWeights(to: url, prefix: prefix, metadata: ["framework": "swift"])

            let file = try SafeTensorsFile(contentsOf: url)
            XCTAssertEqual(Set(file.names), Set(AttentionParameter.allCases.map { prefix + $0.stateDictName }))
            XCTAssertEqual(file.metadata, ["framework": "swift"])
            XCTAssertEqual(file.entries[prefix + "k_proj.weight"]?.shape, [16, 32])

            var target = try MultiHeadAttention(config: gqaSinks, seed: 2)
            try target.loadWeights(from: url, prefix: prefix)
            assertSameWeights(target, source)
            XCTAssertEqual(try target.forward(x).scalars, try source.forward(x).scalars)
        }
    }

    func testStateDictRoundTripAndNoSinkStatesWithoutSinks() throws {
        let plain = try AttentionConfig(dModel: 16, nHeads: 2)
        let source = try MultiHeadAttention(config: plain, seed: 5)
        let dict = source.stateDict(prefix: "enc.")
        XCTAssertEqual(Set(dict.keys), ["enc.q_proj.weight", "enc.k_proj.weight", "enc.v_proj.weight",
                                        "enc.out_proj.weight"])
        var target = try MultiHeadAttention(config: plain, seed: 6)
        try target.loadStateDict(dict, prefix: "enc.")
        assertSameWeights(target, source)
        assertLoadFails(target, AttentionError.invalidInput,
                        mentioning: ["tensor \"q_proj.weight\"", "is missing from the state dict",
                                     "searched with prefix \"\"", "exist under prefix \"enc.\""]) {
            try $0.loadStateDict(dict)
        }
    }

    func testOneFileHoldsAWholeModel() throws {
        let layer0 = try MultiHeadAttention(config: gqaSinks, seed: 10)
        let layer1 = try MultiHeadAttention(config: gqaSinks, seed: 11)
        var tensors = layer0.stateDict(prefix: "layers.0.attn.").merging(layer1.stateDict(prefix: "layers.1.attn.")) { a, _ in a }
        tensors["embed.weight"] = randomTensor([100, 32], seed: 12)
        tensors["layers.0.mlp.q_proj.bias"] = randomTensor([4], seed: 13)  // another module's bias
        let file = try SafeTensorsFile(data: SafeTensorsFile.encode(tensors))

        var loaded = try MultiHeadAttention(config: gqaSinks, seed: 0)
        try loaded.loadWeights(from: file, prefix: "layers.1.attn.")
        assertSameWeights(loaded, layer1)
        try loaded.loadWeights(from: file, prefix: "layers.0.attn.")
        assertSameWeights(loaded, layer0)
    }

    func testMissingTensorIsNamedAndLayerUnchanged() throws {
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 1)
        var tensors = layer.stateDict(prefix: "blk.")
        tensors["blk.v_proj.weight"] = nil
        let file = try SafeTensorsFile(data: SafeTensorsFile.encode(tensors))
        let target = try MultiHeadAttention(config: gqaSinks, seed: 2)
        assertLoadFails(target, AttentionError.invalidFile,
                        mentioning: ["tensor \"blk.v_proj.weight\"", "is missing from the file",
                                     "it holds 4 tensor(s), none named *v_proj.weight"]) {
            try $0.loadWeights(from: file, prefix: "blk.")
        }
        // Missing sinks, when the configuration has them.
        tensors = layer.stateDict()
        tensors["sink_states"] = nil
        let noSinks = try SafeTensorsFile(data: SafeTensorsFile.encode(tensors))
        assertLoadFails(target, AttentionError.invalidFile,
                        mentioning: ["tensor \"sink_states\"", "is missing from the file",
                                     "it holds 4 tensor(s), none named *sink_states"]) {
            try $0.loadWeights(from: noSinks)
        }
    }

    func testWrongPrefixSuggestsTheOneInTheFile() throws {
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 1)
        let file = try SafeTensorsFile(data: SafeTensorsFile.encode(layer.stateDict(prefix: "model.layers.0.attn.")))
        for wrong in ["", "model.layers.0.attn", "model.layers.1.attn."] {
            assertLoadFails(layer, AttentionError.invalidFile,
                            mentioning: ["tensor \"\(wrong)q_proj.weight\"", "is missing from the file",
                                         "searched with prefix \"\(wrong)\"",
                                         "exist under prefix \"model.layers.0.attn.\""]) {
                try $0.loadWeights(from: file, prefix: wrong)
            }
        }
    }

    func testWrongShapeNamesTensorAndBothShapesAndLoadsNothing() throws {
        let source = try MultiHeadAttention(config: gqaSinks, seed: 1)
        // q, k and sinks are fine; v has the MHA shape [32, 32] instead of GQA's [16, 32].
        var tensors = source.stateDict()
        tensors["v_proj.weight"] = randomTensor([32, 32], seed: 3)
        let file = try SafeTensorsFile(data: SafeTensorsFile.encode(tensors))
        let target = try MultiHeadAttention(config: gqaSinks, seed: 2)
        assertLoadFails(target, AttentionError.invalidShape,
                        mentioning: ["tensor \"v_proj.weight\" shape [32, 32]", "must be [16, 32]",
                                     "for dModel 32, nHeads 4, numKVHeads 2"]) {
            try $0.loadWeights(from: file)
        }
        tensors = source.stateDict()
        tensors["sink_states"] = randomTensor([3, 32], seed: 4)
        assertLoadFails(target, AttentionError.invalidShape,
                        mentioning: ["tensor \"sink_states\" shape [3, 32]", "must be [2, 32]",
                                     "numKVHeads 2, numAttentionSinks 2"]) {
            try $0.loadWeights(from: SafeTensorsFile(data: SafeTensorsFile.encode(tensors)))
        }
    }

    func testBiasOrUnexpectedSinksThrowInsteadOfBeingDropped() throws {
        let layer = try MultiHeadAttention(config: gqaSinks, seed: 1)
        var tensors = layer.stateDict(prefix: "attn.")
        tensors["attn.out_proj.bias"] = randomTensor([32], seed: 2)
        assertLoadFails(layer, AttentionError.invalidFile,
                        mentioning: ["tensor \"attn.out_proj.bias\" is in the file", "only the projection weights (no biases)"]) {
            try $0.loadWeights(from: SafeTensorsFile(data: SafeTensorsFile.encode(tensors)), prefix: "attn.")
        }
        let plain = try MultiHeadAttention(config: AttentionConfig(dModel: 32, nHeads: 4, useGQA: true, gqaGroups: 2))
        assertLoadFails(plain, AttentionError.invalidFile,
                        mentioning: ["tensor \"sink_states\" is in the file", "this configuration has useAttentionSinks = false"]) {
            try $0.loadWeights(from: SafeTensorsFile(data: SafeTensorsFile.encode(layer.stateDict())))
        }
    }

    func testLoadsF16AndBF16Weights() throws {
        let config = try AttentionConfig(dModel: 4, nHeads: 2, useRoPE: false)
        // Every weight stored as 16-bit patterns; q in F16, k in BF16, v and out in F32.
        let qBits: [UInt16] = (0..<16).map { UInt16(0x3C00 + $0) }          // 1 + i/1024
        let kBits: [UInt16] = (0..<16).map { UInt16(0xBF80 + $0) }          // −(1 + i/128)
        let v = (0..<16).map { Float($0) / 8 }, out = (0..<16).map { -Float($0) / 16 }
        func le16(_ values: [UInt16]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.littleEndian, Array.init) } }
        func le32(_ values: [Float]) -> [UInt8] {
            values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        }
        let header = #"{"q_proj.weight":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]},"# +
            #""k_proj.weight":{"dtype":"BF16","shape":[4,4],"data_offsets":[32,64]},"# +
            #""v_proj.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[64,128]},"# +
            #""out_proj.weight":{"dtype":"F32","shape":[4,4],"data_offsets":[128,192]}}"#
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: le16(qBits) + le16(kBits) + le32(v) + le32(out))

        var layer = try MultiHeadAttention(config: config)
        try layer.loadWeights(from: SafeTensorsFile(data: data))
        XCTAssertEqual(layer.qProj.scalars, (0..<16).map { 1 + Float($0) / 1024 })
        XCTAssertEqual(layer.kProj.scalars, (0..<16).map { -(1 + Float($0) / 128) })
        XCTAssertEqual(layer.vProj.scalars, v)
        XCTAssertEqual(layer.outProj.scalars, out)
    }
}
