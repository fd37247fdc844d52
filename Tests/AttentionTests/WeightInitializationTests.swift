import Foundation
import XCTest
@testable import Attention

final class WeightInitializationTests: XCTestCase {
    /// SplitMix64's published test vector (seed 1234567) pins the seeding; the xoshiro256**
    /// values were computed by an independent Python transcription of the published algorithm.
    func testGeneratorMatchesPublishedAlgorithms() {
        var splitMix: UInt64 = 1_234_567
        let splitMixOutputs: [UInt64] = (0..<3).map { _ in
            splitMix &+= 0x9E37_79B9_7F4A_7C15
            return DropoutMask.mix(splitMix &- 0x9E37_79B9_7F4A_7C15)
        }
        XCTAssertEqual(splitMixOutputs, [6_457_827_717_110_365_317, 3_203_168_211_198_807_973,
                                         9_817_491_932_198_370_423])
        var generator = SeededGenerator(seed: 0)
        XCTAssertEqual((0..<4).map { _ in generator.next() },
                       [11_091_344_671_253_066_420, 13_793_997_310_169_335_082,
                        1_900_383_378_846_508_768, 7_684_712_102_626_143_532])
    }

    /// The first weights of seed 7, from the same independent Python transcription (uniform
    /// mapping, polar-method normals with the C library's log): what any platform must draw.
    func testWeightsOfASeedAreTheSameOnEveryPlatform() throws {
        let config = try AttentionConfig(dModel: 16, nHeads: 2, useAttentionSinks: true)
        let model = try MultiHeadAttention(config: config, seed: 7)
        XCTAssertEqual(Array(model.qProj.scalars.prefix(4)),
                       [0.07775737345218658, 0.23835086822509766, 0.017910607159137726, 0.05676745995879173])
        XCTAssertEqual(Array(model.sinkStates!.scalars.prefix(4)),
                       [0.02154025435447693, -0.012145133689045906, 0.02780100144445896, -0.0043601966463029385])
    }

    func testPortableLogMatchesTheCLibraryToTheLastBits() {
        var generator = SeededGenerator(seed: 3)
        for _ in 0..<10_000 {
            let x = exp2(generator.nextUnitDouble() * 60 - 30) * (1 + generator.nextUnitDouble())
            let expected = log(x)
            XCTAssertEqual(portableLog(x), expected, accuracy: 4 * max(expected.ulp, Double.ulpOfOne), "log(\(x))")
        }
        XCTAssertEqual(portableLog(1), 0)
    }

    /// nn.Linear's default: U(−1/√in, 1/√in); mean 0, variance bound²/3. With 4,096 draws the
    /// standard error of the mean is bound/√(3·4096) ≈ 0.009·bound; 5σ bounds below.
    func testLinearWeightsFollowPyTorchsUniformDefault() throws {
        let config = try AttentionConfig(dModel: 64, nHeads: 4, useGQA: true, gqaGroups: 2)
        let model = try MultiHeadAttention(config: config, seed: 11)
        let bound: Float = 1 / 8
        for parameter in [AttentionParameter.qProj, .kProj, .vProj, .outProj] {
            let w = model.weight(parameter)!
            XCTAssertEqual(w.shape, model.expectedShape(of: parameter))
            XCTAssertTrue(w.scalars.allSatisfy { abs($0) <= bound }, "\(parameter) exceeds 1/√in")
            let n = Float(w.count)
            let mean = w.scalars.reduce(0, +) / n
            let variance = w.scalars.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n
            let meanTolerance = 5 * bound / (3 * n).squareRoot()
            XCTAssertEqual(mean, 0, accuracy: meanTolerance, "\(parameter) mean")
            XCTAssertEqual(variance, bound * bound / 3, accuracy: 0.1 * bound * bound / 3, "\(parameter) variance")
            XCTAssertGreaterThan(w.scalars.max()!, 0.95 * bound)
            XCTAssertLessThan(w.scalars.min()!, -0.95 * bound)
        }
    }

    func testSinkStatesFollowANormalWithStandardDeviation002() throws {
        let config = try AttentionConfig(dModel: 256, nHeads: 4, useAttentionSinks: true, numAttentionSinks: 16)
        let sinks = try MultiHeadAttention(config: config, seed: 5).sinkStates!
        XCTAssertEqual(sinks.shape, [16, 256])
        let n = Double(sinks.count)
        let values = sinks.scalars.map(Double.init)
        let mean = values.reduce(0, +) / n
        let deviation = (values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 5 * 0.02 / n.squareRoot())
        XCTAssertEqual(deviation, 0.02, accuracy: 0.02 * 5 / (2 * n).squareRoot())
        // Fraction within one standard deviation ≈ 68.3 %.
        let within = Double(values.filter { abs($0) < 0.02 }.count) / n
        XCTAssertEqual(within, 0.6827, accuracy: 0.02)
    }

    func testProjectionWeightsDoNotDependOnWhetherSinksAreOn() throws {
        let plain = try MultiHeadAttention(config: AttentionConfig(dModel: 32, nHeads: 4), seed: 9)
        let withSinks = try MultiHeadAttention(
            config: AttentionConfig(dModel: 32, nHeads: 4, useAttentionSinks: true), seed: 9)
        XCTAssertEqual(plain.qProj, withSinks.qProj)
        XCTAssertEqual(plain.kProj, withSinks.kProj)
        XCTAssertEqual(plain.outProj, withSinks.outProj)
        XCTAssertNotEqual(plain.qProj, plain.kProj, "parameters must draw from distinct streams")
    }
}
