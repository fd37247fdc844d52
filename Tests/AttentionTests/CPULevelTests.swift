import Foundation
import XCTest
@testable import Attention

/// The level is chosen once per process: the CPU's own, lowered (never raised) by
/// `ATTENTION_CPU_LEVEL`. Scripts/test.sh runs the kernel tests again under each lower level.
final class CPULevelTests: XCTestCase {
    func testActiveLevelIsTheSupportedOneLoweredByTheEnvironment() {
        let value = ProcessInfo.processInfo.environment["ATTENTION_CPU_LEVEL"]
        let expected = min(CPULevel.supported, CPULevel.requested(byEnvironmentValue: value) ?? CPULevel.supported)
        XCTAssertEqual(CPULevel.active, expected, "ATTENTION_CPU_LEVEL=\(value ?? "unset")")
        XCTAssertLessThanOrEqual(CPULevel.active, CPULevel.supported)
    }

    /// Scripts that run the suite at a chosen level (Scripts/test.sh, Scripts/test_under_qemu.sh)
    /// say which level they expect in `ATTENTION_EXPECT_CPU_LEVEL`, worked out without the
    /// library, so a rerun that silently stayed at another level fails. Prints both levels
    /// (`CPULevel: active …, supported …`), which those scripts read.
    func testActiveLevelIsTheOneTheRunExpects() throws {
        print("CPULevel: active \(CPULevel.active.rawValue), supported \(CPULevel.supported.rawValue)")
        guard let value = ProcessInfo.processInfo.environment["ATTENTION_EXPECT_CPU_LEVEL"] else {
            throw XCTSkip("ATTENTION_EXPECT_CPU_LEVEL is not set")
        }
        let expected = try XCTUnwrap(CPULevel(rawValue: value), "ATTENTION_EXPECT_CPU_LEVEL=\(value) is not a level")
        XCTAssertEqual(CPULevel.active, expected)
        XCTAssertTrue(Kernels.active == expected.kernels, "Kernels.active is not \(expected)'s")
    }

    func testEnvironmentValuesNameLevels() {
        XCTAssertEqual(CPULevel.requested(byEnvironmentValue: "baseline"), .baseline)
        XCTAssertEqual(CPULevel.requested(byEnvironmentValue: "AVX2"), .avx2)
        XCTAssertEqual(CPULevel.requested(byEnvironmentValue: " avx512 "), .avx512)
        XCTAssertNil(CPULevel.requested(byEnvironmentValue: "sse4"))
        XCTAssertNil(CPULevel.requested(byEnvironmentValue: ""))
        XCTAssertNil(CPULevel.requested(byEnvironmentValue: nil))
    }

    func testEverySupportedLevelIsBuiltAndLevelsAreOrdered() {
        XCTAssertEqual(CPULevel.allCases.sorted(), [.baseline, .avx2, .avx512])
        for level in CPULevel.allCases where level <= CPULevel.supported {
            XCTAssertNotNil(level.kernels, "\(level)")
        }
        #if arch(x86_64)
        XCTAssertEqual(CPULevel.built, .avx512)
        #else
        XCTAssertEqual(CPULevel.built, .baseline)
        #endif
    }
}
