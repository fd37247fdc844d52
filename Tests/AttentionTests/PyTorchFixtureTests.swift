import Foundation
import XCTest
@testable import Attention

/// Numerical parity with PyTorch: golden files written by `Scripts/make_fixtures.py` (a PyTorch
/// `nn.Module` implementing DESIGN.md §3, run in float64) hold the weights under state-dict
/// names, the input, an optional mask and the expected output. Each is loaded through the
/// public safetensors API and run through both kernels.
///
/// Tolerance, one for every fixture: the shared ``Tolerance`` (`assertClose`),
/// max |y − y_torch| ≤ max(1e-5, 1e-5 · max |y_torch|). The expected output is float64 rounded
/// once to fp32, so the error is the library's own fp32 error: about 1e-7 on every fixture.
/// Most fixtures' output scales lie between 0.3 and 1, where the bound is the absolute 1e-5
/// (up to 3.2× the relative 1e-5 · scale); the errors stay 40× or more below it.
final class PyTorchFixtureTests: XCTestCase {
    struct Fixture {
        var name: String
        var file: SafeTensorsFile
        var config: AttentionConfig

        func metadata(_ key: String) -> String? { file.metadata[key] }
    }

    static func fixtureURLs() throws -> [URL] {
        guard let folder = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw XCTSkip("the Fixtures resource folder is missing from the test bundle")
        }
        return try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "safetensors" }
            .sorted { $0.lastPathComponent < $1.lastPathComponent }
    }

    /// The `AttentionConfig` the script stored in `__metadata__`, every value a string.
    static func config(from metadata: [String: String], fixture: String) throws -> AttentionConfig {
        func value(_ key: String) throws -> String {
            guard let text = metadata[key] else { throw AttentionError.invalidFile("\(fixture): no metadata \(key)") }
            return text
        }
        func int(_ key: String) throws -> Int {
            guard let number = Int(try value(key)) else { throw AttentionError.invalidFile("\(fixture): \(key)") }
            return number
        }
        func float(_ key: String) throws -> Float {
            guard let number = Float(try value(key)) else { throw AttentionError.invalidFile("\(fixture): \(key)") }
            return number
        }
        func bool(_ key: String) throws -> Bool {
            switch try value(key) {
            case "true": return true
            case "false": return false
            default: throw AttentionError.invalidFile("\(fixture): \(key)")
            }
        }
        let pairing: RoPEPairing
        switch try value("ropePairing") {
        case "halfSplit": pairing = .halfSplit
        case "interleaved": pairing = .interleaved
        default: throw AttentionError.invalidFile("\(fixture): ropePairing")
        }
        return try AttentionConfig(
            dModel: int("dModel"), nHeads: int("nHeads"), useRoPE: bool("useRoPE"), ropeTheta: float("ropeTheta"),
            ropeScaling: metadata["ropeScaling"] == nil ? nil : float("ropeScaling"), ropePairing: pairing,
            useAttentionSinks: bool("useAttentionSinks"), numAttentionSinks: int("numAttentionSinks"),
            useGQA: bool("useGQA"), gqaGroups: metadata["gqaGroups"] == nil ? nil : int("gqaGroups"),
            isCausal: bool("isCausal"))
    }

    static func loadFixtures() throws -> [Fixture] {
        try fixtureURLs().map { url in
            let name = url.deletingPathExtension().lastPathComponent
            let file = try SafeTensorsFile(contentsOf: url)
            return Fixture(name: name, file: file, config: try config(from: file.metadata, fixture: name))
        }
    }

    func testBothKernelsMatchPyTorchOnEveryFixture() throws {
        let fixtures = try Self.loadFixtures()
        XCTAssertGreaterThanOrEqual(fixtures.count, 12, "Scripts/make_fixtures.py writes 14 fixtures")
        for fixture in fixtures {
            let prefix = fixture.metadata("prefix") ?? ""
            var model = try MultiHeadAttention(config: fixture.config, seed: 0)
            try model.loadWeights(from: fixture.file, prefix: prefix)
            // The weights really are the file's: in the dtype the script says it wrote.
            let dtype = fixture.metadata("weightDType") ?? "F32"
            XCTAssertEqual(fixture.file.entries[prefix + "q_proj.weight"]?.dtype.rawValue, dtype, fixture.name)

            let x = try fixture.file.tensor("input")
            let mask = fixture.file.contains("mask") ? try fixture.file.tensor("mask") : nil
            let expected = try fixture.file.tensor("expected").scalars.map(Double.init)
            var smallBlocks = model
            smallBlocks.flashBlockSizes = FlashBlockSizes(queryBlock: 4, keyBlock: 8)
            for (kernelName, layer, kernel) in [("flash", model, AttentionKernel.flash),
                                                ("reference", model, .reference),
                                                ("flash 4×8 blocks", smallBlocks, .flash)] {
                let output = try layer.forward(x, mask: mask, training: false, dropoutSeed: nil, kernel: kernel)
                XCTAssertEqual(output.shape, x.shape, "\(fixture.name), \(kernelName)")
                let comparison = Comparison(output.scalars, expected)
                XCTAssertGreaterThan(comparison.scale, 0.1, "\(fixture.name): a fixture's output must not be near zero")
                assertClose(output.scalars, expected,
                            "\(fixture.name), \(kernelName) — " + (fixture.metadata("description") ?? ""))
            }
        }
    }

    /// PyTorch's float64 autograd of `sum(dy · y)` (the fixtures' `grad.*` tensors) against both
    /// kernels' pullbacks, flash also with small blocks, under ``Tolerance``.
    func testBothKernelsMatchPyTorchAutograd() throws {
        for fixture in try Self.loadFixtures() {
            let prefix = fixture.metadata("prefix") ?? ""
            var model = try MultiHeadAttention(config: fixture.config, seed: 0)
            try model.loadWeights(from: fixture.file, prefix: prefix)
            let x = try fixture.file.tensor("input")
            let mask = fixture.file.contains("mask") ? try fixture.file.tensor("mask") : nil
            let dy = try fixture.file.tensor("dy")
            var smallBlocks = model
            smallBlocks.flashBlockSizes = FlashBlockSizes(queryBlock: 4, keyBlock: 8)
            for (kernelName, layer, kernel) in [("flash", model, AttentionKernel.flash),
                                                ("reference", model, .reference),
                                                ("flash 4×8 blocks", smallBlocks, .flash)] {
                let grads = try layer.forwardWithPullback(x, mask: mask, kernel: kernel).pullback(dy)
                let label = "\(fixture.name), \(kernelName)"
                assertClose(grads.input.scalars, try fixture.file.tensor("grad.input").scalars, "\(label): dx")
                for parameter in AttentionParameter.allCases {
                    let name = "grad." + parameter.stateDictName
                    guard fixture.file.contains(name) else {
                        XCTAssertNil(grads[parameter], "\(label): \(parameter) has no PyTorch gradient")
                        continue
                    }
                    let gradient = try XCTUnwrap(grads[parameter], "\(label): \(parameter)")
                    assertClose(gradient, try fixture.file.tensor(name), "\(label): d\(parameter.stateDictName)")
                }
            }
        }
    }

    /// The fixtures have teeth: the wrong RoPE pairing, or the causal rule flipped, misses the
    /// expected output by more than 100× the bound of ``Tolerance``.
    ///
    /// Judged on finite values only: a NaN or ±∞ in the wrong-semantic output is a failure (a
    /// finite input must never give one), not a "difference" that lets the check pass.
    func testFixturesRejectAWrongSemantic() throws {
        for fixture in try Self.loadFixtures() {
            let c = fixture.config
            let x = try fixture.file.tensor("input")
            let mask = fixture.file.contains("mask") ? try fixture.file.tensor("mask") : nil
            let expected = try fixture.file.tensor("expected").scalars.map(Double.init)
            var variants: [(String, AttentionConfig)] = [
                ("isCausal flipped", try AttentionConfig(
                    dModel: c.dModel, nHeads: c.nHeads, useRoPE: c.useRoPE, ropeTheta: c.ropeTheta,
                    ropeScaling: c.ropeScaling, ropePairing: c.ropePairing, useAttentionSinks: c.useAttentionSinks,
                    numAttentionSinks: c.numAttentionSinks, useGQA: c.useGQA, gqaGroups: c.gqaGroups,
                    isCausal: !c.isCausal)),
            ]
            if c.useRoPE {
                variants.append(("other RoPE pairing", try AttentionConfig(
                    dModel: c.dModel, nHeads: c.nHeads, useRoPE: true, ropeTheta: c.ropeTheta,
                    ropeScaling: c.ropeScaling, ropePairing: c.ropePairing == .halfSplit ? .interleaved : .halfSplit,
                    useAttentionSinks: c.useAttentionSinks, numAttentionSinks: c.numAttentionSinks,
                    useGQA: c.useGQA, gqaGroups: c.gqaGroups, isCausal: c.isCausal)))
            }
            for (change, config) in variants where !(change == "isCausal flipped" && x.shape[1] == 1) {
                var model = try MultiHeadAttention(config: config, seed: 0)
                try model.loadWeights(from: fixture.file, prefix: fixture.metadata("prefix") ?? "")
                let output = try model.forward(x, mask: mask, training: false, dropoutSeed: nil, kernel: .reference)
                let comparison = Comparison(output.scalars, expected)
                let label = "\(fixture.name) with \(change)"
                XCTAssertEqual(output.shape, x.shape, label)
                XCTAssertTrue(output.scalars.allSatisfy(\.isFinite), "\(label): non-finite output: \(comparison)")
                XCTAssertGreaterThan(comparison.maxError, 100 * comparison.bound, "\(label): \(comparison)")
            }
        }
    }

    /// The fixtures cover what the issue promised; a pruned folder fails here, not silently.
    func testFixturesCoverEveryFeature() throws {
        let fixtures = try Self.loadFixtures()
        func some(_ what: String, _ predicate: (Fixture) -> Bool) {
            XCTAssertTrue(fixtures.contains(where: predicate), "no fixture with \(what)")
        }
        some("GQA") { $0.config.useGQA && $0.config.numKVHeads < $0.config.nHeads }
        some("MQA (one kv head)") { $0.config.numKVHeads == 1 }
        some("sinks") { $0.config.useAttentionSinks }
        some("halfSplit RoPE") { $0.config.useRoPE && $0.config.ropePairing == .halfSplit }
        some("interleaved RoPE") { $0.config.useRoPE && $0.config.ropePairing == .interleaved }
        some("no RoPE") { !$0.config.useRoPE }
        some("ropeScaling") { $0.config.useRoPE && $0.config.ropeScaling != nil }
        some("causal") { $0.config.isCausal }
        some("not causal") { !$0.config.isCausal }
        some("batch > 1") { (try? $0.file.tensor("input").shape[0]) ?? 0 > 1 }
        some("a [B,1,N,N] mask") { $0.file.entries["mask"]?.shape.count == 4 && $0.file.entries["mask"]?.shape[1] == 1 }
        some("a [N,N] mask") { $0.file.entries["mask"]?.shape.count == 2 }
        some("a per-head mask") { ($0.file.entries["mask"]?.shape.count ?? 0) == 4 && $0.file.entries["mask"]!.shape[1] > 1 }
        some("a mask covering sinks") {
            $0.config.useAttentionSinks && $0.file.entries["mask"]?.shape.last == $0.config.numSinks
                + ($0.file.entries["input"]?.shape[1] ?? 0)
        }
        some("a sink with a token-width mask") {
            $0.config.useAttentionSinks && $0.file.entries["mask"]?.shape.last == $0.file.entries["input"]?.shape[1]
        }
        some("weights under a prefix") { !($0.metadata("prefix") ?? "").isEmpty }
        some("weights without a prefix") { ($0.metadata("prefix") ?? "").isEmpty }
        some("F16 weights") { $0.file.entries.values.contains { $0.dtype == .float16 } }
        some("BF16 weights") { $0.file.entries.values.contains { $0.dtype == .bfloat16 } }
        some("a query row that sees nothing (zeros)") { fixture in
            guard let expected = try? fixture.file.tensor("expected") else { return false }
            let d = fixture.config.dModel
            return stride(from: 0, to: expected.count, by: d).contains { start in
                expected.scalars[start..<(start + d)].allSatisfy { $0 == 0 }
            }
        }
    }

    /// What the Swift side writes, the Swift side reads back to the same state dict.
    func testFixtureWeightsSurviveASaveAndLoad() throws {
        for fixture in try Self.loadFixtures() {
            let prefix = fixture.metadata("prefix") ?? ""
            var model = try MultiHeadAttention(config: fixture.config, seed: 0)
            try model.loadWeights(from: fixture.file, prefix: prefix)
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("fixture-\(UUID()).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try model.saveWeights(to: url, prefix: prefix)
            var reloaded = try MultiHeadAttention(config: fixture.config, seed: 1)
            try reloaded.loadWeights(from: url, prefix: prefix)
            XCTAssertEqual(reloaded.stateDict(), model.stateDict(), fixture.name)
        }
    }
}
