import AttentionKernelInterface
import XCTest
@testable import Attention

/// The decoding score kernel against float64 dot products, over every shape its blocking
/// distinguishes: member counts that use the three-, two- and one-query loops, key counts
/// around the groups of three and four, head widths that are and are not multiples of 8 and of 4
/// (the scalar tail: 1, 2, 3, 5, 6, 7, 63, 66), and key rows wider than the head (a head-column
/// slice of a wider row). Keys end exactly at the last row's last element, so reading past a
/// row's head width is caught by the address sanitizer.
///
/// Tolerance: |s − s64| ≤ 1e-6 · Σₑ |q·k| (fp32 summation of headDim products in a
/// different order); a wrong key, row or lane is off by O(|s|).
final class DotProductsTests: XCTestCase {
    func testScoresMatchFloat64DotProductsAtEveryLevel() throws {
        for level in CPULevel.allCases where level <= CPULevel.supported {
            let kernels = try XCTUnwrap(level.kernels, "\(level) is supported but not built")
            for members in 1...5 {
                // Multiples of the 4-, 8- and 16-float registers, and widths with a tail at each.
                for headDim in [1, 2, 3, 4, 5, 6, 7, 8, 12, 15, 17, 24, 63, 64, 66, 68, 80, 127] {
                    for count in [0, 1, 3, 4, 5, 8, 9, 23] {
                        for extraStride in [0, 12] {
                            check(kernels, level: level, members: members, headDim: headDim, count: count,
                                  keyStride: headDim + extraStride)
                        }
                    }
                }
            }
        }
    }

    private func check(
        _ kernels: any AttentionKernelSet.Type, level: CPULevel,
        members: Int, headDim: Int, count: Int, keyStride: Int
    ) {
        let seed = UInt64(members * 1_000_000 + headDim * 10_000 + count * 100 + keyStride)
        let queries = randomTensor([members * headDim], seed: seed).scalars
        let keys = randomTensor([max(count, 1) * keyStride - (keyStride - headDim)], seed: seed ^ 0x5EED, amplitude: 3).scalars
        let scoreStride = count + 3
        var scores = [Float](repeating: .nan, count: members * scoreStride)
        queries.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                scores.withUnsafeMutableBufferPointer { s in
                    kernels.dotProducts(queries: q.baseAddress!, members: members, headDim: headDim,
                                        keys: k.baseAddress!, keyStride: keyStride, count: count,
                                        into: s.baseAddress!, scoreStride: scoreStride)
                }
            }
        }
        let label = "\(level): members \(members), headDim \(headDim), count \(count), keyStride \(keyStride)"
        for m in 0..<members {
            for j in 0..<count {
                var exact = 0.0, magnitude = 0.0
                for e in 0..<headDim {
                    let product = Double(queries[m * headDim + e]) * Double(keys[j * keyStride + e])
                    exact += product
                    magnitude += abs(product)
                }
                let got = Double(scores[m * scoreStride + j])
                XCTAssertLessThanOrEqual(abs(got - exact), 1e-6 * magnitude, "\(label): s[\(m), \(j)]")
            }
            // Columns past `count` are not written.
            for j in count..<scoreStride {
                XCTAssertTrue(scores[m * scoreStride + j].isNaN, "\(label): s[\(m), \(j)] written")
            }
        }
    }
}
