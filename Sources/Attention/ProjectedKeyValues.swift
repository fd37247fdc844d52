/// Post-RoPE keys and values in the token-major layout the projections write, `[rows,
/// numKVHeads · headDim]` each (a key/value head is a column slice of a row), handing the
/// kernel its rows as ``KeyValueSegment``s.
///
/// Two owners use it: the layer's projected sinks (`S` rows, positions `0..<S`, shared by every
/// batch row) and one call's token keys and values (`batch · seq` rows, batch row `b` at rows
/// `b · seq ..< (b + 1) · seq`). A ``KVCache`` has a layout of its own and hands over its own
/// segments.
struct ProjectedKeyValues: Sendable, Equatable {
    var keys: AlignedBuffer
    var values: AlignedBuffer
    /// `numKVHeads · headDim`: elements per row.
    let width: Int

    /// `rows` rows of zeros.
    init(rows: Int, width: Int) {
        self.init(keys: AlignedBuffer(zeros: rows * width), values: AlignedBuffer(zeros: rows * width), width: width)
    }

    init(keys: AlignedBuffer, values: AlignedBuffer, width: Int) {
        self.keys = keys
        self.values = values
        self.width = width
    }

    /// Rows `first ..< first + count` as one segment: row `first` sits at `firstPosition`.
    /// Valid while `self` is alive and unmutated.
    ///
    /// - Parameters:
    ///   - isSink: sinks are exempt from the causal and window rules.
    ///   - firstMaskColumn: the additive mask's column of row `first`, or `nil` when the mask
    ///     does not cover these rows.
    func segment(
        rows first: Int, count: Int, firstPosition: Int, isSink: Bool, firstMaskColumn: Int?
    ) -> KeyValueSegment {
        KeyValueSegment(keys: keys.pointer + first * width, values: values.pointer + first * width,
                        rowStride: width, rowCount: count, firstPosition: firstPosition, isSink: isSink,
                        firstMaskColumn: firstMaskColumn)
    }
}
