/// Every failure the library reports. Each message names the parameter, its value and the rule,
/// for example `gqaGroups (5) must divide nHeads (12); try 1, 2, 3, 4, 6 or 12`.
///
/// A throwing call writes nothing: no output is returned and no weight is changed.
public enum AttentionError: Error, CustomStringConvertible, Equatable, Sendable {
    /// An ``AttentionConfig`` rule is broken.
    case invalidConfiguration(String)
    /// A `forward` argument (input, mask) has the wrong shape or values.
    case invalidInput(String)
    /// A weight or tensor has the wrong shape or element count.
    case invalidShape(String)
    /// A size would overflow `Int`, or exceeds ``AttentionLimits``.
    case sizeLimitExceeded(String)
    /// A safetensors file cannot be read or written, breaks a rule of the format, or lacks a
    /// tensor that was asked for.
    case invalidFile(String)

    public var message: String {
        switch self {
        case .invalidConfiguration(let message), .invalidInput(let message),
             .invalidShape(let message), .sizeLimitExceeded(let message), .invalidFile(let message):
            return message
        }
    }

    public var description: String {
        switch self {
        case .invalidConfiguration(let message): return "invalid configuration: \(message)"
        case .invalidInput(let message): return "invalid input: \(message)"
        case .invalidShape(let message): return "invalid shape: \(message)"
        case .sizeLimitExceeded(let message): return "size limit exceeded: \(message)"
        case .invalidFile(let message): return "invalid file: \(message)"
        }
    }
}

/// Size limits checked before anything is allocated.
///
/// OpenBLAS takes sizes and strides as 32-bit integers, so every matrix dimension handed to
/// `sgemm` (rows, columns, row stride) must stay below `Int32.max`, and every tensor's element
/// count must fit `Int`.
public enum AttentionLimits {
    /// Largest matrix dimension or row stride passed to BLAS.
    public static let maxDimension = Int(Int32.max)
}

/// Product of `dimensions`, or a thrown ``AttentionError/sizeLimitExceeded(_:)`` naming `what`
/// when it overflows `Int`.
func checkedElementCount(_ dimensions: [Int], of what: String) throws -> Int {
    if dimensions.contains(0) { return 0 }
    var count = 1
    for dimension in dimensions {
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        if overflow {
            throw AttentionError.sizeLimitExceeded(
                "\(what) shape \(dimensions) has more elements than Int can count")
        }
        count = product
    }
    return count
}
