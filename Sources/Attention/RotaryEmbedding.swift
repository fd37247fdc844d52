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

    /// Tokens of one piece of parallel work: one cos/sin table serves every head of them.
    static let tokenBlock = 64

    /// Rotates, in place, every head of each buffer of `targets`, each `[batch, seq,
    /// headCount · headDim]`; batch row `b`'s token `t` sits at position `firstPositions[b] + t`.
    ///
    /// Queries and keys of a call share one table per position. Blocks of ``tokenBlock`` tokens
    /// of one batch row are shared out among up to `workers` workers, and a position's angles
    /// are computed the same way in every block, so the result does not depend on the count.
    ///
    /// `inverse` rotates by `−θ` instead: the transposed rotation, which carries a gradient with
    /// respect to rotated heads back to the heads before RoPE.
    func apply(
        to targets: [(heads: UnsafeMutablePointer<Float>, headCount: Int)], batch: Int, seq: Int,
        firstPositions: [Int], workers: Int, inverse: Bool = false
    ) {
        let blocksPerRow = (seq + Self.tokenBlock - 1) / Self.tokenBlock
        let pieces = RotationPieces(rope: self, targets: targets, seq: seq, firstPositions: firstPositions,
                                    inverse: inverse)
        WorkerPool.forEach(batch * blocksPerRow, workers: workers) { piece in
            pieces.run(batch: piece / blocksPerRow, firstToken: piece % blocksPerRow * Self.tokenBlock)
        }
    }

    /// The buffers of one ``apply(to:batch:seq:firstPositions:workers:)`` call, shared by its
    /// workers, which rotate disjoint rows.
    private struct RotationPieces: @unchecked Sendable {
        let rope: RotaryEmbedding
        let targets: [(heads: UnsafeMutablePointer<Float>, headCount: Int)]
        let seq: Int
        let firstPositions: [Int]
        let inverse: Bool

        func run(batch b: Int, firstToken: Int) {
            let tokens = min(RotaryEmbedding.tokenBlock, seq - firstToken)
            let (cosines, forwardSines) = rope.table(firstPosition: firstPositions[b] + firstToken, count: tokens)
            let sines = inverse ? forwardSines.map { -$0 } : forwardSines
            cosines.withUnsafeBufferPointer { cosines in
                sines.withUnsafeBufferPointer { sines in
                    for (heads, headCount) in targets {
                        let rowStride = headCount * rope.headDim
                        Kernels.active.rotate(heads + (b * seq + firstToken) * rowStride, rows: tokens,
                                              rowStride: rowStride, headCount: headCount, headDim: rope.headDim,
                                              cosines: cosines.baseAddress!, sines: sines.baseAddress!,
                                              tableRows: tokens, halfSplit: rope.pairing == .halfSplit)
                    }
                }
            }
        }
    }

    /// `cos θ` and `sin θ` of every frequency at positions `firstPosition ..< firstPosition + count`,
    /// `[count, headDim / 2]` each.
    func table(firstPosition: Int, count: Int) -> (cosines: [Float], sines: [Float]) {
        let half = headDim / 2
        var cosines = [Float](repeating: 0, count: count * half)
        var sines = [Float](repeating: 0, count: count * half)
        for t in 0..<count {
            let position = Double(firstPosition + t)
            for i in 0..<half {
                let angle = position * frequencies[i]
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
        return (cosines, sines)
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
        let (cosines, sines) = table(firstPosition: firstPosition, count: tableRows)
        cosines.withUnsafeBufferPointer { cosines in
            sines.withUnsafeBufferPointer { sines in
                Kernels.active.rotate(heads, rows: rows, rowStride: rowStride, headCount: headCount,
                                      headDim: headDim, cosines: cosines.baseAddress!, sines: sines.baseAddress!,
                                      tableRows: tableRows, halfSplit: pairing == .halfSplit)
            }
        }
    }
}
