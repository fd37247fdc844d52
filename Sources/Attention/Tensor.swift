/// A dense, row-major fp32 tensor: the currency of the library.
///
/// `scalars[i]` holds the element whose multi-index is `i` written in mixed radix `shape`;
/// the last dimension is contiguous. A `[batch, seq, dModel]` activation stores token `t` of
/// batch row `b` at `scalars[(b * seq + t) * dModel ..< (b * seq + t + 1) * dModel]`.
public struct Tensor: Sendable, Equatable {
    /// Extent of each dimension; every entry is ≥ 0.
    public let shape: [Int]
    /// The elements, `shape.reduce(1, *)` of them, row-major.
    public internal(set) var scalars: [Float]

    /// Wraps `scalars` as a tensor of `shape`.
    ///
    /// - Throws: ``AttentionError/invalidShape(_:)`` when a dimension is negative or
    ///   `scalars.count` differs from the product of `shape`;
    ///   ``AttentionError/sizeLimitExceeded(_:)`` when that product overflows `Int`.
    public init(shape: [Int], scalars: [Float]) throws {
        if let negative = shape.first(where: { $0 < 0 }) {
            throw AttentionError.invalidShape(
                "tensor shape \(shape) has a negative dimension (\(negative)); dimensions must be >= 0")
        }
        let count = try checkedElementCount(shape, of: "tensor")
        guard count == scalars.count else {
            throw AttentionError.invalidShape(
                "tensor scalars.count (\(scalars.count)) must equal the product of shape \(shape) (\(count))")
        }
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of `shape` filled with zeros.
    ///
    /// Like `Array(repeating:count:)`, a negative dimension is a programming error and traps;
    /// shapes that come from outside the program go through ``init(shape:scalars:)``.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.scalars = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// Number of dimensions.
    public var rank: Int { shape.count }

    /// Number of elements.
    public var count: Int { scalars.count }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let preview = scalars.prefix(8).map { "\($0)" }.joined(separator: ", ")
        return "Tensor(shape: \(shape), scalars: [\(preview)\(scalars.count > 8 ? ", …" : "")])"
    }
}
