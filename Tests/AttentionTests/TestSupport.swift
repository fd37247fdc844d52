import XCTest
@testable import Attention

/// Deterministic test inputs: `[shape]` from `U(−amplitude, amplitude)`.
func randomTensor(_ shape: [Int], seed: UInt64, amplitude: Float = 1) -> Tensor {
    var generator = SeededGenerator(seed: seed)
    let count = shape.reduce(1, *)
    let scalars = (0..<count).map { _ in generator.nextUniform(bound: Double(amplitude)) }
    return try! Tensor(shape: shape, scalars: scalars)
}

/// Largest `|actual − expected|` and largest `|expected|`.
func maxErrorAndScale(_ actual: [Float], _ expected: [Double]) -> (error: Double, scale: Double) {
    precondition(actual.count == expected.count)
    var error = 0.0, scale = 0.0
    for (a, e) in zip(actual, expected) {
        error = max(error, abs(Double(a) - e))
        scale = max(scale, abs(e))
    }
    return (error, scale)
}
