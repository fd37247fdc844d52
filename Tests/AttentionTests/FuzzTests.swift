import XCTest
@testable import Attention

/// 1,000 seeded random small layers and inputs: the flash kernel (with random block sizes and
/// worker counts) equals the reference kernel, and both equal the float64 oracle.
///
/// Tolerance: max |Δ| ≤ 1e-5 · max(1, max |expected|), the suite's one tolerance. A failure
/// prints the case's seed and configuration; `FUZZ_SEED=<seed>` replays that one case.
final class FuzzTests: XCTestCase {
    static let tolerance = 1e-5

    struct FuzzCase: CustomStringConvertible {
        var seed: UInt64
        var config: AttentionConfig
        var batch: Int, seq: Int
        var maskShape: [Int]?
        var training: Bool
        var blocks: FlashBlockSizes
        var workers: Int

        var description: String {
            "seed \(seed): dModel \(config.dModel), heads \(config.nHeads)/\(config.numKVHeads), "
                + "rope \(config.useRoPE ? "\(config.ropePairing)" : "off") scaling \(config.ropeScaling.map { "\($0)" } ?? "nil"), "
                + "sinks \(config.numSinks), causal \(config.isCausal), dropout \(config.dropout) training \(training), "
                + "batch \(batch), seq \(seq), mask \(maskShape.map { "\($0)" } ?? "none"), "
                + "blocks \(blocks.queryBlock)×\(blocks.keyBlock), workers \(workers)"
        }

        init(seed: UInt64) throws {
            var g = SeededGenerator(seed: seed)
            func pick<T>(_ choices: [T]) -> T { choices[Int(g.next() % UInt64(choices.count))] }
            let heads = pick([1, 2, 3, 4, 6])
            let kvHeads = pick((1...heads).filter { heads % $0 == 0 })
            let headDim = pick([2, 4, 6, 8, 16])
            let sinks = pick([0, 0, 1, 2, 3])
            let useRoPE = pick([true, true, false])
            config = try AttentionConfig(
                dModel: heads * headDim, nHeads: heads, useRoPE: useRoPE,
                ropeTheta: pick([10000, 500, 1e6]), ropeScaling: pick([nil, nil, 0.25, 2]),
                ropePairing: pick([.halfSplit, .interleaved]), useAttentionSinks: sinks > 0,
                numAttentionSinks: max(sinks, 1), useGQA: kvHeads != heads || pick([false, true]),
                gqaGroups: kvHeads, dropout: pick([0, 0, 0, 0.2, 0.5]), isCausal: pick([true, false]))
            self.seed = seed
            batch = pick([1, 1, 2, 3])
            seq = pick([1, 2, 3, 5, 7, 8, 9, 12, 16, 17])
            let n = seq, s = sinks
            maskShape = pick([nil, nil, [n, n], [batch, 1, n, n], [1, 1, n, n], [batch, heads, n, n],
                              [batch, 1, n, s + n], [n, s + n]])
            training = config.dropout > 0 && pick([true, false])
            blocks = FlashBlockSizes(queryBlock: Int(1 + g.next() % 17), keyBlock: Int(1 + g.next() % 33))
            workers = pick([1, 2, 3])
        }
    }

    func check(seed: UInt64) throws {
        let fuzz = try FuzzCase(seed: seed)
        var model = try MultiHeadAttention(config: fuzz.config, seed: seed)
        if fuzz.config.useAttentionSinks {
            try model.setWeight(randomTensor([fuzz.config.numSinks, fuzz.config.dModel], seed: seed ^ 0x51),
                                for: .sinkStates)
        }
        model.flashBlockSizes = fuzz.blocks
        model.kernelWorkerCount = fuzz.workers
        let x = randomTensor([fuzz.batch, fuzz.seq, fuzz.config.dModel], seed: seed ^ 0xA5, amplitude: 2)
        let mask = fuzz.maskShape.map { shape -> Tensor in
            var g = SeededGenerator(seed: seed ^ 0x3C)
            return try! Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in
                switch g.next() % 6 {
                case 0: return -.infinity
                case 1: return g.nextUniform(bound: 3)
                default: return 0
                }
            })
        }
        let reference = try model.forward(x, mask: mask, training: fuzz.training, dropoutSeed: seed, kernel: .reference)
        let flash = try model.forward(x, mask: mask, training: fuzz.training, dropoutSeed: seed, kernel: .flash)
        let expected = fuzz.training
            ? reference.scalars.map(Double.init)
            : NaiveAttentionOracle.forward(model, x: x, mask: mask)
        for (name, output) in [("reference", reference), ("flash", flash)] {
            let (error, scale) = maxErrorAndScale(output.scalars, expected)
            XCTAssertLessThanOrEqual(error, Self.tolerance * max(1, scale),
                                     "\(name) vs \(fuzz.training ? "reference" : "float64 oracle"): "
                                         + "max error \(error) at scale \(scale); \(fuzz)")
        }
    }

    func testThousandRandomLayersAgreeAcrossKernelsAndTheOracle() throws {
        if let replay = ProcessInfo.processInfo.environment["FUZZ_SEED"].flatMap(UInt64.init) {
            return try check(seed: replay)
        }
        for seed in UInt64(1)...1000 {
            try check(seed: seed)
        }
    }
}
