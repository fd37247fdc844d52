/// How rotary position embeddings pair the elements of a head.
public enum RoPEPairing: Sendable, Hashable, CaseIterable {
    /// Element `i` pairs with element `i + headDim/2` (Llama, GPT-NeoX; the default).
    case halfSplit
    /// Element `2i` pairs with element `2i + 1` (GPT-J, the original RoFormer).
    case interleaved
}

/// The hyper-parameters of one ``MultiHeadAttention`` layer, validated on construction.
///
/// Derived sizes: `headDim = dModel / nHeads`, `numKVHeads = useGQA ? gqaGroups! : nHeads`,
/// `numSinks = useAttentionSinks ? numAttentionSinks : 0`. Query head `h` reads key/value head
/// `h / (nHeads / numKVHeads)` (consecutive groups, like PyTorch's `repeat_interleave`).
///
/// A value of this type always satisfies every rule below; the properties are read-only so
/// that stays true. Make a new configuration to change one.
public struct AttentionConfig: Sendable, Equatable {
    /// Model width: the last dimension of the input and output, `[batch, seq, dModel]`.
    public let dModel: Int
    /// Number of query heads.
    public let nHeads: Int
    /// Apply rotary position embeddings to queries and keys.
    public let useRoPE: Bool
    /// RoPE base: `invFreq[i] = ropeTheta^(-2i/headDim)`.
    public let ropeTheta: Float
    /// Multiplies every RoPE frequency; `0.25` stretches positions 4× (linear interpolation,
    /// Hugging Face `factor = 4`). `nil` means 1.
    public let ropeScaling: Float?
    /// Which elements RoPE rotates together.
    public let ropePairing: RoPEPairing
    /// Prepend learnable sink tokens to every sequence's keys and values.
    public let useAttentionSinks: Bool
    /// Number of sink tokens `S` when ``useAttentionSinks`` is on.
    public let numAttentionSinks: Int
    /// Use grouped-query attention with ``gqaGroups`` key/value heads.
    public let useGQA: Bool
    /// Number of key/value heads when ``useGQA`` is on; must divide ``nHeads``.
    /// Ignored when ``useGQA`` is off.
    public let gqaGroups: Int?
    /// Dropout probability on the attention weights, in training mode only.
    public let dropout: Float
    /// Run the blocked online-softmax kernel instead of the reference kernel.
    public let useFlashAttention: Bool
    /// Token query `i` sees token keys `j <= i` only; sinks stay visible.
    public let isCausal: Bool

    /// Validates and stores a configuration.
    ///
    /// - Throws: ``AttentionError/invalidConfiguration(_:)`` naming the parameter, its value and
    ///   the rule, when any of these fail: `dModel > 0`; `nHeads > 0`; `nHeads` divides `dModel`;
    ///   `headDim` even when `useRoPE`; `ropeTheta` finite and `> 0`; `ropeScaling` finite and
    ///   `> 0` when given; `numAttentionSinks > 0` when `useAttentionSinks`; `gqaGroups` given,
    ///   `>= 1` and dividing `nHeads` when `useGQA`; `0 <= dropout < 1`.
    public init(
        dModel: Int,
        nHeads: Int,
        useRoPE: Bool = true,
        ropeTheta: Float = 10000,
        ropeScaling: Float? = nil,
        ropePairing: RoPEPairing = .halfSplit,
        useAttentionSinks: Bool = false,
        numAttentionSinks: Int = 4,
        useGQA: Bool = false,
        gqaGroups: Int? = nil,
        dropout: Float = 0,
        useFlashAttention: Bool = true,
        isCausal: Bool = true
    ) throws {
        func fail(_ message: String) -> AttentionError { .invalidConfiguration(message) }

        guard dModel > 0 else { throw fail("dModel (\(dModel)) must be > 0") }
        guard nHeads > 0 else { throw fail("nHeads (\(nHeads)) must be > 0") }
        guard dModel % nHeads == 0 else {
            throw fail("dModel (\(dModel)) must be divisible by nHeads (\(nHeads))")
        }
        let headDim = dModel / nHeads
        if useRoPE && headDim % 2 != 0 {
            throw fail("headDim (dModel / nHeads = \(headDim)) must be even when useRoPE is true")
        }
        guard ropeTheta.isFinite && ropeTheta > 0 else {
            throw fail("ropeTheta (\(ropeTheta)) must be finite and > 0")
        }
        if let ropeScaling, !(ropeScaling.isFinite && ropeScaling > 0) {
            throw fail("ropeScaling (\(ropeScaling)) must be finite and > 0 when given")
        }
        if useAttentionSinks && numAttentionSinks <= 0 {
            throw fail("numAttentionSinks (\(numAttentionSinks)) must be > 0 when useAttentionSinks is true")
        }
        if useGQA {
            guard let groups = gqaGroups else {
                throw fail("gqaGroups (nil) must be given when useGQA is true")
            }
            guard groups >= 1 else { throw fail("gqaGroups (\(groups)) must be >= 1") }
            guard nHeads % groups == 0 else {
                throw fail("gqaGroups (\(groups)) must divide nHeads (\(nHeads))" + Self.divisorHint(nHeads))
            }
        }
        guard dropout >= 0 && dropout < 1 else {
            throw fail("dropout (\(dropout)) must be in [0, 1)")
        }

        self.dModel = dModel
        self.nHeads = nHeads
        self.useRoPE = useRoPE
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.ropePairing = ropePairing
        self.useAttentionSinks = useAttentionSinks
        self.numAttentionSinks = numAttentionSinks
        self.useGQA = useGQA
        self.gqaGroups = gqaGroups
        self.dropout = dropout
        self.useFlashAttention = useFlashAttention
        self.isCausal = isCausal
    }

    /// "; try 1, 2, 3, 4, 6 or 12" for 12; nothing for head counts too large to list.
    private static func divisorHint(_ nHeads: Int) -> String {
        guard nHeads <= 4096 else { return "" }
        let divisors = (1...nHeads).filter { nHeads % $0 == 0 }.map(String.init)
        guard divisors.count > 1 else { return "; try \(divisors[0])" }
        return "; try " + divisors.dropLast().joined(separator: ", ") + " or " + divisors.last!
    }

    /// `dModel / nHeads`.
    public var headDim: Int { dModel / nHeads }
    /// Number of key/value heads: ``gqaGroups`` with GQA, else ``nHeads``.
    public var numKVHeads: Int { useGQA ? gqaGroups! : nHeads }
    /// Number of sink tokens actually prepended: `numAttentionSinks` or 0.
    public var numSinks: Int { useAttentionSinks ? numAttentionSinks : 0 }
}
