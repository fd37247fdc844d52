import XCTest
@testable import Attention

/// DESIGN.md §3, last rule: "Invalid configuration or input is a thrown `AttentionError` whose
/// message names the parameter, the value and the rule. No precondition traps, no silent wrong
/// answers, no partially written outputs."
///
/// One test per rule. Each checks the error's case and that its message contains the parameter,
/// the offending value and the rule; where a call could write something (`setWeight`), it also
/// checks that nothing changed.
final class ValidationTests: XCTestCase {

    // MARK: - Helpers

    private func config(
        dModel: Int = 16, nHeads: Int = 4, useRoPE: Bool = true, ropeTheta: Float = 10000,
        ropeScaling: Float? = nil, useAttentionSinks: Bool = false, numAttentionSinks: Int = 4,
        useGQA: Bool = false, gqaGroups: Int? = nil, dropout: Float = 0
    ) throws -> AttentionConfig {
        try AttentionConfig(
            dModel: dModel, nHeads: nHeads, useRoPE: useRoPE, ropeTheta: ropeTheta,
            ropeScaling: ropeScaling, useAttentionSinks: useAttentionSinks,
            numAttentionSinks: numAttentionSinks, useGQA: useGQA, gqaGroups: gqaGroups,
            dropout: dropout)
    }

    /// A deterministic, non-constant tensor (values in about [-1, 1]).
    private func filled(_ shape: [Int], seed: Int = 1) throws -> Tensor {
        let count = shape.reduce(1, *)
        let scalars = (0..<count).map { i in Float(((i + seed) * 37) % 101) / 50 - 1 }
        return try Tensor(shape: shape, scalars: scalars)
    }

    /// B = 2, N = 4, H = 4, dModel = 16, no sinks: the layer the mask-shape tests use.
    private func maskFixture(sinks: Int = 0) throws -> (MultiHeadAttention, Tensor) {
        let c = try config(useAttentionSinks: sinks > 0, numAttentionSinks: max(sinks, 1))
        return (try MultiHeadAttention(config: c, seed: 7), try filled([2, 4, 16]))
    }

    private func assertMaskRejected(
        _ shapes: [[Int]], sinks: Int = 0, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let (model, x) = try maskFixture(sinks: sinks)
        for shape in shapes {
            let mask = Tensor(zeros: shape)
            assertThrows(AttentionError.invalidInput,
                         containing: ["mask shape \(shape)", "must be one of",
                                      "[4, 4]", "[2, 4, 4, 4]",
                                      "for batch 2, nHeads 4, seq 4, sinks \(sinks)"],
                         "mask \(shape), sinks \(sinks)", file: file, line: line) {
                try model.forward(x, mask: mask)
            }
        }
    }

    // MARK: - AttentionConfig.init

    func testDModelMustBePositive() {
        for dModel in [0, -8] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["dModel (\(dModel))", "must be > 0"], "dModel \(dModel)") {
                try config(dModel: dModel)
            }
        }
    }

    func testNHeadsMustBePositive() {
        for nHeads in [0, -2] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["nHeads (\(nHeads))", "must be > 0"], "nHeads \(nHeads)") {
                try config(nHeads: nHeads)
            }
        }
    }

    func testDModelMustBeDivisibleByNHeads() {
        assertThrows(AttentionError.invalidConfiguration,
                     containing: ["dModel (10)", "must be divisible by", "nHeads (4)"]) {
            try config(dModel: 10, nHeads: 4, useRoPE: false)
        }
    }

    func testHeadDimMustBeEvenWithRoPE() throws {
        assertThrows(AttentionError.invalidConfiguration,
                     containing: ["headDim (dModel / nHeads = 3)", "must be even", "when useRoPE is true"]) {
            try config(dModel: 12, nHeads: 4, useRoPE: true)
        }
        // The rule only applies with RoPE.
        XCTAssertEqual(try config(dModel: 12, nHeads: 4, useRoPE: false).headDim, 3)
    }

    func testRopeThetaMustBeFiniteAndPositive() {
        for theta: Float in [0, -1, .infinity, -.infinity, .nan] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["ropeTheta (\(theta))", "must be finite and > 0"],
                         "ropeTheta \(theta)") {
                try config(ropeTheta: theta)
            }
        }
    }

    func testRopeScalingMustBeFiniteAndPositiveWhenGiven() throws {
        for scaling: Float in [0, -0.5, .infinity, .nan] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["ropeScaling (\(scaling))", "must be finite and > 0", "when given"],
                         "ropeScaling \(scaling)") {
                try config(ropeScaling: scaling)
            }
        }
        XCTAssertNil(try config(ropeScaling: nil).ropeScaling)
        XCTAssertEqual(try config(ropeScaling: 0.25).ropeScaling, 0.25)
    }

    func testNumAttentionSinksMustBePositiveWhenSinksAreOn() throws {
        for sinks in [0, -1] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["numAttentionSinks (\(sinks))", "must be > 0", "useAttentionSinks"],
                         "numAttentionSinks \(sinks)") {
                try config(useAttentionSinks: true, numAttentionSinks: sinks)
            }
        }
        // Ignored with sinks off.
        XCTAssertEqual(try config(useAttentionSinks: false, numAttentionSinks: 0).numSinks, 0)
    }

    func testGQAGroupsMustBeGivenWithGQA() throws {
        assertThrows(AttentionError.invalidConfiguration,
                     containing: ["gqaGroups (nil)", "must be given", "useGQA"]) {
            try config(useGQA: true, gqaGroups: nil)
        }
        // Ignored without GQA.
        XCTAssertEqual(try config(useGQA: false, gqaGroups: 3).numKVHeads, 4)
    }

    func testGQAGroupsMustBeAtLeastOne() {
        for groups in [0, -2] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["gqaGroups (\(groups))", "must be >= 1"], "gqaGroups \(groups)") {
                try config(useGQA: true, gqaGroups: groups)
            }
        }
    }

    /// The rule is divisibility; a group count above nHeads (8 for 4 heads) is one instance of
    /// it, not a rule of its own. The message suggests the divisors while there are few enough
    /// heads to list them (up to 4096).
    func testGQAGroupsMustDivideNHeads() throws {
        let cases: [(dModel: Int, nHeads: Int, groups: Int, hint: String)] = [
            (96, 12, 5, "; try 1, 2, 3, 4, 6 or 12"),
            (96, 12, 24, "; try 1, 2, 3, 4, 6 or 12"),
            (16, 4, 8, "; try 1, 2 or 4"),
            (16, 4, 3, "; try 1, 2 or 4"),
            (56, 7, 2, "; try 1 or 7"),
            (16, 1, 2, "; try 1"),
        ]
        for (dModel, nHeads, groups, hint) in cases {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["gqaGroups (\(groups))", "must divide nHeads (\(nHeads))", hint],
                         "nHeads \(nHeads), gqaGroups \(groups)") {
                try config(dModel: dModel, nHeads: nHeads, useGQA: true, gqaGroups: groups)
            }
        }
        // Too many heads to list: the rule alone, nothing after it.
        assertThrows(AttentionError.invalidConfiguration, containing: ["gqaGroups (3)", "must divide nHeads (4097)"]) {
            try config(dModel: 2 * 4097, nHeads: 4097, useRoPE: false, useGQA: true, gqaGroups: 3)
        }
        XCTAssertThrowsError(try config(dModel: 2 * 4097, nHeads: 4097, useRoPE: false, useGQA: true, gqaGroups: 3)) {
            XCTAssertEqual($0 as? AttentionError, .invalidConfiguration("gqaGroups (3) must divide nHeads (4097)"))
        }
        // Every divisor is accepted, from MQA (1) to MHA (nHeads).
        for groups in [1, 2, 3, 4, 6, 12] {
            XCTAssertEqual(try config(dModel: 96, nHeads: 12, useGQA: true, gqaGroups: groups).numKVHeads, groups)
        }
    }

    func testDropoutMustBeInHalfOpenUnitInterval() throws {
        for p: Float in [-0.1, 1, 1.5, .nan, .infinity] {
            assertThrows(AttentionError.invalidConfiguration,
                         containing: ["dropout (\(p))", "must be in [0, 1)"], "dropout \(p)") {
                try config(dropout: p)
            }
        }
        XCTAssertEqual(try config(dropout: 0).dropout, 0)
        XCTAssertEqual(try config(dropout: 0.999).dropout, 0.999)
    }

    // MARK: - Tensor.init(shape:scalars:)

    func testTensorScalarCountMustMatchShape() {
        assertThrows(AttentionError.invalidShape,
                     containing: ["tensor scalars.count (5)", "must equal the product of shape [2, 3] (6)"]) {
            try Tensor(shape: [2, 3], scalars: [Float](repeating: 0, count: 5))
        }
    }

    func testTensorDimensionsMustBeNonNegative() {
        assertThrows(AttentionError.invalidShape,
                     containing: ["tensor shape [2, -1]", "negative dimension (-1)", "must be >= 0"]) {
            try Tensor(shape: [2, -1], scalars: [])
        }
    }

    func testTensorElementCountMustFitInt() {
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["tensor shape [\(Int.max), 2]", "more elements than Int can count"]) {
            try Tensor(shape: [Int.max, 2], scalars: [])
        }
    }

    // MARK: - forward: x

    func testForwardInputMustBeRankThree() throws {
        let model = try MultiHeadAttention(config: try config())
        for shape in [[4, 16], [16], [1, 1, 4, 16]] {
            let x = Tensor(zeros: shape)
            assertThrows(AttentionError.invalidInput,
                         containing: ["x shape \(shape)", "[batch, seq, dModel]",
                                      "rank 3, got rank \(shape.count)"], "x \(shape)") {
                try model.forward(x)
            }
        }
    }

    func testForwardInputMustEndInDModel() throws {
        let model = try MultiHeadAttention(config: try config())
        for width in [8, 17, 0] {
            let x = Tensor(zeros: [2, 3, width])
            assertThrows(AttentionError.invalidInput,
                         containing: ["x shape [2, 3, \(width)]", "must end in dModel (16)",
                                      "got last dimension \(width)"], "width \(width)") {
                try model.forward(x)
            }
        }
    }

    func testForwardSequenceMustFitBLASLimit() throws {
        // seq beyond 32-bit BLAS sizes; batch 0 keeps the tensor empty.
        let model = try MultiHeadAttention(config: try config())
        let n = AttentionLimits.maxDimension + 1
        let x = try Tensor(shape: [0, n, 16], scalars: [])
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["sinks + seq (0 + \(n))", "must be <= \(AttentionLimits.maxDimension)"]) {
            try model.forward(x)
        }
        // With sinks, seq near Int.max must not overflow `sinks + seq` on the way to the error.
        let sinkModel = try MultiHeadAttention(config: try AttentionConfig(dModel: 16, nHeads: 2, useAttentionSinks: true))
        let huge = try Tensor(shape: [0, Int.max - 2, 16], scalars: [])
        assertThrows(AttentionError.sizeLimitExceeded,
                     containing: ["sinks + seq (4 + \(Int.max - 2))", "must be <= \(AttentionLimits.maxDimension)"]) {
            try sinkModel.forward(huge, mask: Tensor(zeros: [1, 1]))
        }
    }

    // MARK: - forward: mask shape

    func testMaskOfWrongRankIsRejected() throws {
        try assertMaskRejected([[16], [2, 4, 4], [8, 4, 4], [2, 1, 1, 4, 4], []])
    }

    func testMaskWithWrongQueryCountIsRejected() throws {
        try assertMaskRejected([[3, 4], [5, 4], [2, 1, 3, 4], [2, 4, 5, 4], [1, 1, 0, 4]])
    }

    func testMaskWithWrongWidthIsRejected() throws {
        // No sinks: only width N; S+N-like widths are wrong too.
        try assertMaskRejected([[4, 3], [4, 5], [4, 8], [2, 1, 4, 3], [1, 4, 4, 6], [4, 0]])
        // Two sinks: widths N and S+N only.
        try assertMaskRejected([[4, 5], [4, 7], [4, 2], [2, 1, 4, 5], [1, 1, 4, 7]], sinks: 2)
    }

    func testMaskWithWrongBatchIsRejected() throws {
        try assertMaskRejected([[3, 1, 4, 4], [0, 1, 4, 4], [4, 4, 4, 4]])
    }

    func testMaskWithHeadDimensionNeitherOneNorNHeadsIsRejected() throws {
        try assertMaskRejected([[2, 2, 4, 4], [2, 8, 4, 4], [1, 0, 4, 4], [1, 3, 4, 4]])
    }

    func testMaskHeadDimensionIsQueryHeadsNotKVHeadsUnderGQA() throws {
        let c = try config(useGQA: true, gqaGroups: 2)
        let model = try MultiHeadAttention(config: c)
        let x = try filled([1, 3, 16])
        assertThrows(AttentionError.invalidInput,
                     containing: ["mask shape [1, 2, 3, 3]", "must be one of", "[1, 4, 3, 3]", "nHeads 4"]) {
            try model.forward(x, mask: Tensor(zeros: [1, 2, 3, 3]))
        }
        XCTAssertNoThrow(try model.forward(x, mask: Tensor(zeros: [1, 4, 3, 3])))
    }

    // MARK: - forward: mask values

    func testMaskMustNotContainNaN() throws {
        let (model, x) = try maskFixture()
        var mask = Tensor(zeros: [4, 4])
        mask.scalars[5] = .nan
        assertThrows(AttentionError.invalidInput,
                     containing: ["mask element 5 (nan)", "must not be NaN or +inf"]) {
            try model.forward(x, mask: mask)
        }
    }

    func testMaskMustNotContainPositiveInfinity() throws {
        let (model, x) = try maskFixture()
        var mask = Tensor(zeros: [2, 1, 4, 4])
        mask.scalars[0] = -.infinity  // allowed
        mask.scalars[21] = .infinity
        assertThrows(AttentionError.invalidInput,
                     containing: ["mask element 21 (inf)", "must not be NaN or +inf"]) {
            try model.forward(x, mask: mask)
        }
    }

    // MARK: - setWeight

    /// A layer where every parameter has a distinct shape: dModel 16, 4 heads, 2 KV heads, 3 sinks.
    private func weightFixture() throws -> MultiHeadAttention {
        let c = try config(useAttentionSinks: true, numAttentionSinks: 3, useGQA: true, gqaGroups: 2)
        return try MultiHeadAttention(config: c, seed: 11)
    }

    private func assertSetWeightRejectsWrongShapes(
        _ parameter: AttentionParameter, _ shapes: [[Int]], expected: [Int],
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        var model = try weightFixture()
        let before = model.weight(parameter)
        XCTAssertEqual(model.expectedShape(of: parameter), expected, file: file, line: line)
        XCTAssertEqual(before?.shape, expected, file: file, line: line)
        for shape in shapes {
            let replacement = try filled(shape, seed: 3)
            assertThrows(AttentionError.invalidShape,
                         containing: ["\(parameter.stateDictName) shape \(shape)", "must be \(expected)",
                                      "dModel 16", "nHeads 4", "numKVHeads 2"],
                         "\(parameter) \(shape)", file: file, line: line) {
                try model.setWeight(replacement, for: parameter)
            }
            XCTAssertEqual(model.weight(parameter), before, "\(parameter) changed by a failed setWeight",
                           file: file, line: line)
        }
        // The right shape is accepted and stored.
        let good = try filled(expected, seed: 5)
        try model.setWeight(good, for: parameter)
        XCTAssertEqual(model.weight(parameter), good, file: file, line: line)
    }

    func testSetWeightRejectsWrongQProjShape() throws {
        try assertSetWeightRejectsWrongShapes(.qProj, [[8, 16], [16, 8], [256], [1, 16, 16]],
                                              expected: [16, 16])
    }

    func testSetWeightRejectsWrongKProjShape() throws {
        try assertSetWeightRejectsWrongShapes(.kProj, [[16, 8], [16, 16], [128]], expected: [8, 16])
    }

    func testSetWeightRejectsWrongVProjShape() throws {
        try assertSetWeightRejectsWrongShapes(.vProj, [[16, 8], [16, 16], [8, 16, 1]], expected: [8, 16])
    }

    func testSetWeightRejectsWrongOutProjShape() throws {
        try assertSetWeightRejectsWrongShapes(.outProj, [[16, 8], [8, 16], [0, 16]], expected: [16, 16])
    }

    func testSetWeightRejectsWrongSinkStatesShape() throws {
        try assertSetWeightRejectsWrongShapes(.sinkStates, [[4, 16], [16, 3], [3, 8], [48]],
                                              expected: [3, 16])
        // The message also names the sink count.
        var model = try weightFixture()
        assertThrows(AttentionError.invalidShape,
                     containing: ["sink_states shape [4, 16]", "must be [3, 16]", "numAttentionSinks 3"]) {
            try model.setWeight(Tensor(zeros: [4, 16]), for: .sinkStates)
        }
    }

    func testSetWeightRejectsSinkStatesWhenSinksAreOff() throws {
        var model = try MultiHeadAttention(config: try config(useAttentionSinks: false))
        XCTAssertNil(model.expectedShape(of: .sinkStates))
        let before = (model.qProj, model.kProj, model.vProj, model.outProj)
        for shape in [[4, 16], [1, 16]] {
            let tensor = Tensor(zeros: shape)
            assertThrows(AttentionError.invalidShape,
                         containing: ["sink_states", "cannot be set", "useAttentionSinks = false"]) {
                try model.setWeight(tensor, for: .sinkStates)
            }
        }
        XCTAssertNil(model.sinkStates)
        XCTAssertNil(model.weight(.sinkStates))
        XCTAssertEqual(model.qProj, before.0)
        XCTAssertEqual(model.kProj, before.1)
        XCTAssertEqual(model.vProj, before.2)
        XCTAssertEqual(model.outProj, before.3)
    }

    // MARK: - What is accepted

    func testEveryDocumentedMaskShapeIsAccepted() throws {
        let b = 2, n = 3, h = 4, s = 2
        let model = try MultiHeadAttention(
            config: try config(useAttentionSinks: true, numAttentionSinks: s), seed: 3)
        let x = try filled([b, n, 16])
        let shapes = [[n, n], [n, s + n], [b, 1, n, n], [1, 1, n, n], [b, h, n, n], [1, h, n, n],
                      [b, 1, n, s + n], [1, 1, n, s + n], [b, h, n, s + n]]
        for shape in shapes {
            var mask = try filled(shape, seed: 9)
            mask.scalars[0] = -.infinity
            for kernel in AttentionKernel.allCases {
                let out = try model.forward(x, mask: mask, dropoutSeed: nil, kernel: kernel)
                XCTAssertEqual(out.shape, [b, n, 16], "mask \(shape), \(kernel)")
                XCTAssertTrue(out.scalars.allSatisfy(\.isFinite), "mask \(shape), \(kernel)")
            }
        }
        // Without sinks the token-width forms are accepted too.
        let (plain, x2) = try maskFixture()
        for shape in [[4, 4], [2, 1, 4, 4], [1, 1, 4, 4], [2, 4, 4, 4], [1, 4, 4, 4]] {
            XCTAssertNoThrow(try plain.forward(x2, mask: Tensor(zeros: shape)), "mask \(shape)")
        }
    }

    func testEmptyBatchOrSequenceReturnsEmptyOutput() throws {
        for sinks in [false, true] {
            let c = try config(useAttentionSinks: sinks, numAttentionSinks: 2, dropout: 0.5)
            let model = try MultiHeadAttention(config: c)
            for shape in [[0, 3, 16], [2, 0, 16], [0, 0, 16]] {
                let x = Tensor(zeros: shape)
                for training in [false, true] {
                    let out = try model.forward(x, training: training)
                    XCTAssertEqual(out.shape, shape, "x \(shape), sinks \(sinks)")
                    XCTAssertTrue(out.scalars.isEmpty)
                }
                let mask = Tensor(zeros: [shape[0], 1, shape[1], shape[1]])
                XCTAssertEqual(try model.forward(x, mask: mask).shape, shape)
            }
        }
    }

    func testConfigDefaultsMatchDocumentation() throws {
        let c = try AttentionConfig(dModel: 64, nHeads: 8)
        XCTAssertEqual(c.dModel, 64)
        XCTAssertEqual(c.nHeads, 8)
        XCTAssertTrue(c.useRoPE)
        XCTAssertEqual(c.ropeTheta, 10000)
        XCTAssertNil(c.ropeScaling)
        XCTAssertEqual(c.ropePairing, .halfSplit)
        XCTAssertFalse(c.useAttentionSinks)
        XCTAssertEqual(c.numAttentionSinks, 4)
        XCTAssertFalse(c.useGQA)
        XCTAssertNil(c.gqaGroups)
        XCTAssertEqual(c.dropout, 0)
        XCTAssertTrue(c.useFlashAttention)
        XCTAssertTrue(c.isCausal)
        XCTAssertEqual(c.headDim, 8)
        XCTAssertEqual(c.numKVHeads, 8)
        XCTAssertEqual(c.numSinks, 0)

        // MultiHeadAttention's defaults: seed 0, PyTorch initialisation.
        let model = try MultiHeadAttention(config: c)
        let explicit = try MultiHeadAttention(config: c, seed: 0, weightInitialization: .pytorchDefault)
        for parameter in AttentionParameter.allCases {
            XCTAssertEqual(model.weight(parameter), explicit.weight(parameter), "\(parameter)")
        }
        XCTAssertEqual(model.scale, 1 / Float(8).squareRoot())
    }
}
