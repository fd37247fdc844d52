/// Validation of the additive mask passed to ``MultiHeadAttention/forward(_:mask:training:)``.
///
/// Accepted shapes, with `B` batch rows, `H` query heads, `N` tokens and `S` sinks:
/// `[N, N]`, `[N, S+N]`, and `[B or 1, 1 or H, N, N or S+N]`. A width of `N` covers the token
/// keys only (sink columns get 0, so sinks stay visible); a width of `S+N` covers the sinks too,
/// in key order `[sinks ; tokens]`. Values are added to the scaled scores: `0` = visible,
/// `−∞` or a large negative number = hidden. NaN and `+∞` are rejected.
struct MaskLayout: Sendable {
    var batchStride: Int
    var headStride: Int
    var width: Int
    /// Whether the mask's first `S` columns belong to the sinks.
    var coversSinks: Bool

    static func validate(
        _ mask: Tensor, batch: Int, heads: Int, queryCount: Int, sinkCount: Int
    ) throws -> MaskLayout {
        let n = queryCount, s = sinkCount
        let layout = try validate(mask, batch: batch, heads: heads, queryCount: n,
                                  widths: s > 0 ? [n, s + n] : [n],
                                  context: "for batch \(batch), nHeads \(heads), seq \(n), sinks \(s)")
        return MaskLayout(batchStride: layout.batchStride, headStride: layout.headStride, width: layout.width,
                          coversSinks: s > 0 && layout.width == s + n)
    }

    /// A mask of `queryCount` rows and one of `widths` columns, `[rows, width]` or
    /// `[batch or 1, 1 or heads, rows, width]`; `context` ends the error message.
    static func validate(
        _ mask: Tensor, batch: Int, heads: Int, queryCount: Int, widths: [Int], context: String
    ) throws -> MaskLayout {
        let n = queryCount
        let accepted = widths.map { "[\(n), \($0)]" }
            + widths.flatMap { w in
                Set([batch, 1]).sorted().flatMap { b in
                    Set([1, heads]).sorted().map { h in "[\(b), \(h), \(n), \(w)]" }
                }
            }
        let shapeError = AttentionError.invalidInput(
            "mask shape \(mask.shape) must be one of \(accepted.joined(separator: ", ")) \(context)")

        let shape = mask.shape
        let width: Int, batchStride: Int, headStride: Int
        switch shape.count {
        case 2:
            guard shape[0] == n, widths.contains(shape[1]) else { throw shapeError }
            width = shape[1]
            batchStride = 0
            headStride = 0
        case 4:
            guard shape[0] == batch || shape[0] == 1, shape[1] == 1 || shape[1] == heads,
                  shape[2] == n, widths.contains(shape[3]) else { throw shapeError }
            width = shape[3]
            headStride = shape[1] == 1 ? 0 : n * width
            batchStride = shape[0] == 1 ? 0 : shape[1] * n * width
        default:
            throw shapeError
        }

        if let bad = mask.scalars.firstIndex(where: { $0.isNaN || $0 == .infinity }) {
            throw AttentionError.invalidInput(
                "mask element \(bad) (\(mask.scalars[bad])) must not be NaN or +inf; "
                    + "use 0 for visible and -inf or a large negative number for hidden")
        }
        return MaskLayout(batchStride: batchStride, headStride: headStride, width: width, coversSinks: false)
    }
}
