import AttentionKernelInterface

/// Dropout on attention probabilities from a counter-based generator.
///
/// Whether the weight of query `i` on key `j` survives depends only on
/// `(seed, batch, head, position(i), position(j))`: no state advances, so the reference and
/// flash kernels, every block size and every thread count draw the same bits. Positions are
/// the RoPE positions of DESIGN.md §3 (sinks at `0..<S`, token `t` at `S + t`).
/// A survivor is scaled by `1 / (1 − p)`, so the expected weight is unchanged.
struct DropoutMask: Sendable {
    let seed: UInt64
    let probability: Float
    /// Survivors are multiplied by this: `1 / (1 − p)`.
    let keepScale: Float
    /// A weight survives when the top 32 bits of its hash are `>= threshold`; `threshold / 2³²`
    /// is `p` rounded to the nearest multiple of 2⁻³².
    let threshold: UInt64

    init(probability: Float, seed: UInt64) {
        self.seed = seed
        self.probability = probability
        self.keepScale = 1 / (1 - probability)
        self.threshold = UInt64((Double(probability) * 4_294_967_296).rounded())
    }

    /// The part of the hash shared by one query row: mix in everything but the key position.
    @inline(__always)
    func rowKey(batch: Int, head: Int, queryPosition: Int) -> UInt64 {
        var key = Self.mix(seed)
        key = Self.mix(key ^ UInt64(truncatingIfNeeded: batch))
        key = Self.mix(key ^ UInt64(truncatingIfNeeded: head))
        return Self.mix(key ^ UInt64(truncatingIfNeeded: queryPosition))
    }

    /// The factor for one weight of a row: `keepScale` or `0` (the flash kernel's softmax step
    /// draws the same through `DropoutRow`).
    @inline(__always)
    func factor(rowKey: UInt64, keyPosition: Int) -> Float {
        DropoutRow(rowKey: rowKey, threshold: threshold, keepScale: keepScale, firstKeyPosition: 0)
            .factor(keyPosition: keyPosition)
    }

    /// SplitMix64's finaliser: a bijection on 64 bits with full avalanche.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        SplitMix64.mix(value)
    }
}
