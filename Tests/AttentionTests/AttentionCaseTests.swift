import XCTest
@testable import Attention

/// Both kernels through the layer API against the float64 oracle over one parameter matrix
/// (``AttentionCase``), under the suite's one ``Tolerance``; every case names itself on failure.
final class AttentionCaseTests: XCTestCase {
    func testKernelsMatchOracleOverTheSemanticMatrix() {
        for testCase in AttentionCase.semanticMatrix { testCase.check() }
    }

    func testKernelsMatchOracleAcrossShapesHeadDimsBlocksAndWorkers() {
        for testCase in AttentionCase.shapeMatrix { testCase.check() }
    }

    /// Both kernels' gradients against the float64 backward oracle over the backward matrix.
    func testGradientsMatchOracleOverTheBackwardMatrix() {
        for testCase in AttentionCase.backwardMatrix { testCase.checkGradients() }
    }

    /// 1,000 random cases from the same space; `FUZZ_SEED=<seed>` replays one.
    func testThousandRandomCasesMatchTheOracle() {
        if let replay = ProcessInfo.processInfo.environment["FUZZ_SEED"].flatMap(UInt64.init) {
            return AttentionCase.random(seed: replay).check("FUZZ_SEED=\(replay)")
        }
        for seed in UInt64(1)...1000 {
            AttentionCase.random(seed: seed).check("FUZZ_SEED=\(seed)")
        }
    }
}
