import XCTest
@testable import Attention

/// Deterministic test inputs: `[shape]` from `U(−amplitude, amplitude)`.
func randomTensor(_ shape: [Int], seed: UInt64, amplitude: Float = 1) -> Tensor {
    var generator = SeededGenerator(seed: seed)
    let count = shape.reduce(1, *)
    let scalars = (0..<count).map { _ in generator.nextUniform(bound: Double(amplitude)) }
    return try! Tensor(shape: shape, scalars: scalars)
}

/// Token rows `range` of every batch row of a `[batch, seq, d]` tensor: `[batch, range.count, d]`.
func tokenRows(_ x: Tensor, _ range: Range<Int>) -> Tensor {
    let (batch, seq, d) = (x.shape[0], x.shape[1], x.shape[2])
    let scalars = (0..<batch).flatMap { b in
        x.scalars[((b * seq + range.lowerBound) * d)..<((b * seq + range.upperBound) * d)]
    }
    return try! Tensor(shape: [batch, range.count, d], scalars: scalars)
}

/// The suite's one tolerance for two computations of the same attention (a kernel against the
/// float64 oracle, the flash kernel against the reference kernel, a cached decode against a
/// full forward, this library against PyTorch):
///
///     every |actual − expected| ≤ max(absolute, relative · max |expected|)
///
/// The bound scales with the largest expected magnitude, not each element's own: an output is a
/// softmax-weighted sum whose fp32 rounding grows with the values summed, so a near-zero element
/// of a large output carries the output's error, not a tiny one. fp32 paths differ from each
/// other and from float64 by below 1e-6 relative here (blocked vs whole-row sums, the polynomial
/// `exp2`, sgemm over at most 512 inputs); a semantic slip (a wrong mask column, position, kv
/// head, a dropped sink or rescale) moves outputs by 1e-2 or more.
///
/// Non-finite values never pass: NaN or ±∞ on either side is a failure, so two paths that both
/// produce NaN do not agree (an expected NaN, for an overflow, is checked by its own test).
///
/// Checks of other quantities (RoPE angles and norms, statistical bounds on dropout) and the
/// few exact-math checks that claim a tighter bound state theirs beside the check.
enum Tolerance {
    static let absolute = 1e-5
    static let relative = 1e-5

    /// Gradients (flash-attention's rule): a fast backward passes when its largest error
    /// against float64 is at most twice that of a plain fp32 implementation of the same math
    /// (the reference kernel's materialised backward, itself held to the bound above), plus a
    /// floor of `relative / 10` of the gradient's scale for gradients the plain one gets almost
    /// exactly. A slip in one gradient (a dropped sink, a missing scale, a transposed product)
    /// moves it by 1e-2 of its scale or more.
    static func gradientBound(plainError: Double, scale: Double) -> Double {
        2 * plainError + max(absolute, relative * scale) / 10
    }
}

/// Where and by how much `actual` misses `expected`, under ``Tolerance``.
struct Comparison: CustomStringConvertible {
    /// Largest |actual − expected| over finite pairs.
    var maxError = 0.0
    /// Largest |expected| over finite elements.
    var scale = 0.0
    /// Elements where either side is not finite.
    var nonFiniteMismatches = 0
    var firstNonFinite: (index: Int, actual: Float, expected: Double)?
    var countMismatch: (actual: Int, expected: Int)?

    init(_ actual: [Float], _ expected: [Double]) {
        guard actual.count == expected.count else {
            countMismatch = (actual.count, expected.count)
            return
        }
        for (index, (a, e)) in zip(actual, expected).enumerated() {
            let a64 = Double(a)
            if a64.isFinite && e.isFinite {
                maxError = max(maxError, abs(a64 - e))
                scale = max(scale, abs(e))
            } else {
                nonFiniteMismatches += 1
                if firstNonFinite == nil { firstNonFinite = (index, a, e) }
            }
        }
    }

    init(_ actual: [Float], _ expected: [Float]) {
        self.init(actual, expected.map(Double.init))
    }

    /// `max(absolute, relative · scale)`.
    var bound: Double { max(Tolerance.absolute, Tolerance.relative * scale) }

    var passes: Bool { countMismatch == nil && nonFiniteMismatches == 0 && maxError <= bound }

    var description: String {
        if let (actual, expected) = countMismatch { return "\(actual) values, expected \(expected)" }
        var text = "max |Δ| \(maxError) (bound \(bound), scale \(scale))"
        if let first = firstNonFinite {
            text += "; \(nonFiniteMismatches) non-finite element(s), first at \(first.index): "
                + "\(first.actual) where \(first.expected) was expected"
        }
        return text
    }
}

/// Fails unless `actual` matches `expected` under ``Tolerance`` (see there: NaN never passes).
func assertClose(
    _ actual: [Float], _ expected: [Double], _ label: @autoclosure () -> String,
    file: StaticString = #filePath, line: UInt = #line
) {
    let comparison = Comparison(actual, expected)
    XCTAssertTrue(comparison.passes, "\(label()): \(comparison)", file: file, line: line)
}

func assertClose(
    _ actual: [Float], _ expected: [Float], _ label: @autoclosure () -> String,
    file: StaticString = #filePath, line: UInt = #line
) {
    assertClose(actual, expected.map(Double.init), label(), file: file, line: line)
}

/// Shapes equal, and the elements as ``assertClose(_:_:_:file:line:)-([Float],[Double],_,_,_)``.
func assertClose(
    _ actual: Tensor, _ expected: Tensor, _ label: @autoclosure () -> String,
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.shape, expected.shape, "\(label()): shape", file: file, line: line)
    assertClose(actual.scalars, expected.scalars, label(), file: file, line: line)
}

/// Fails unless `actual` (a fast backward's gradient) is within
/// ``Tolerance/gradientBound(plainError:scale:)`` of `expected` (float64), `plain` being the
/// plain fp32 implementation's gradient; NaN or ±∞ on either side never passes.
func assertGradientClose(
    _ actual: [Float], plain: [Float], _ expected: [Double], _ label: @autoclosure () -> String,
    file: StaticString = #filePath, line: UInt = #line
) {
    let comparison = Comparison(actual, expected), plainComparison = Comparison(plain, expected)
    let bound = Tolerance.gradientBound(plainError: plainComparison.maxError, scale: comparison.scale)
    let passes = comparison.countMismatch == nil && comparison.nonFiniteMismatches == 0
        && plainComparison.nonFiniteMismatches == 0 && comparison.maxError <= bound
    XCTAssertTrue(passes, "\(label()): \(comparison); plain fp32 max |Δ| \(plainComparison.maxError), gradient bound \(bound)",
                  file: file, line: line)
}

/// Every element has the same bit pattern (so −0 differs from +0) and none is NaN (a kernel that
/// wrote nothing into a NaN-filled buffer does not pass); reports the first mismatch.
func assertBitwiseEqual(
    _ actual: [Float], _ expected: [Float], _ label: @autoclosure () -> String,
    file: StaticString = #filePath, line: UInt = #line
) {
    guard actual.count == expected.count else {
        return XCTFail("\(label()): \(actual.count) values, expected \(expected.count)", file: file, line: line)
    }
    let mismatches = actual.indices.filter { actual[$0].isNaN || actual[$0].bitPattern != expected[$0].bitPattern }
    if let first = mismatches.first {
        XCTFail("\(label()): \(mismatches.count) of \(actual.count) elements differ; first at \(first): "
                    + "\(actual[first]) vs \(expected[first])", file: file, line: line)
    }
}
