import Foundation

/// Rotary position embeddings (RoPE, Su et al. 2021), applied in place to query or key heads.
///
/// For head element pair `(a, b)` with frequency index `i` at position `p`:
///
///     θ = p · invFreq[i] · ropeScaling,   invFreq[i] = ropeTheta^(-2i / headDim)
///     a' = a·cos θ − b·sin θ
///     b' = a·sin θ + b·cos θ
///
/// `.halfSplit` pairs element `i` with `i + headDim/2`; `.interleaved` pairs `2i` with `2i + 1`.
/// Both are true rotations, so each pair keeps its norm and `q·k` after RoPE depends only on
/// the difference of the two positions. Angles and their cosines are computed in `Double`,
/// then rounded once to `Float`.
struct RotaryEmbedding: Sendable {
    let headDim: Int
    let pairing: RoPEPairing
    /// `invFreq[i] · (ropeScaling ?? 1)`, i in `0..<headDim/2`.
    let frequencies: [Double]

    init(headDim: Int, theta: Float, scaling: Float?, pairing: RoPEPairing) {
        self.headDim = headDim
        self.pairing = pairing
        let scale = Double(scaling ?? 1)
        self.frequencies = (0..<headDim / 2).map { i in
            pow(Double(theta), -2 * Double(i) / Double(headDim)) * scale
        }
    }

    init(config: AttentionConfig) {
        self.init(headDim: config.headDim, theta: config.ropeTheta,
                  scaling: config.ropeScaling, pairing: config.ropePairing)
    }

    /// Rotates the heads of `[batch, seq, headCount · headDim]` rows in place; batch row `b`'s
    /// token `t` sits at position `firstPositions[b] + t`.
    func apply(to heads: inout AlignedBuffer, batch: Int, seq: Int, headCount: Int, firstPositions: [Int]) {
        let rowStride = headCount * headDim
        heads.withMutablePointer { heads in
            for b in 0..<batch {
                apply(to: heads + b * seq * rowStride, rows: seq, rowStride: rowStride, headCount: headCount,
                      sequenceLength: seq, firstPosition: firstPositions[b])
            }
        }
    }

    /// Rotates every head of `rows` rows in place.
    ///
    /// - Parameters:
    ///   - heads: `[rows, headCount * headDim]` with row stride `rowStride`; a head is a
    ///     column slice.
    ///   - sequenceLength: rows are `[batch, sequenceLength]` flattened, so row `r` sits at
    ///     position `firstPosition + r % sequenceLength`.
    func apply(
        to heads: UnsafeMutablePointer<Float>, rows: Int, rowStride: Int, headCount: Int,
        sequenceLength: Int, firstPosition: Int
    ) {
        let half = headDim / 2
        guard rows > 0, sequenceLength > 0, half > 0 else { return }
        let tableRows = min(rows, sequenceLength)
        // One cos/sin table per position, shared by every head and batch row.
        var cosines = [Float](repeating: 0, count: tableRows * half)
        var sines = [Float](repeating: 0, count: tableRows * half)
        for t in 0..<tableRows {
            let position = Double(firstPosition + t)
            for i in 0..<half {
                let angle = position * frequencies[i]
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
        cosines.withUnsafeBufferPointer { cosines in
            sines.withUnsafeBufferPointer { sines in
                Kernels.active.rotate(heads, rows: rows, rowStride: rowStride, headCount: headCount,
                                      headDim: headDim, cosines: cosines.baseAddress!, sines: sines.baseAddress!,
                                      tableRows: tableRows, halfSplit: pairing == .halfSplit)
            }
        }
    }
}
