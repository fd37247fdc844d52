/// Runs `body` with the base address of each of `arrays`, all valid for the call (one scope
/// for several arrays instead of one nested closure per array). An empty array's address is a
/// valid pointer that must not be read.
func withUnsafePointers<Result>(
    to arrays: [[Float]], _ body: ([UnsafePointer<Float>]) throws -> Result
) rethrows -> Result {
    func nest(_ index: Int, _ collected: [UnsafePointer<Float>]) throws -> Result {
        guard index < arrays.count else { return try body(collected) }
        return try arrays[index].withUnsafeBufferPointer { buffer in
            // An empty array may have no storage; hand out a dangling, never-read address.
            try nest(index + 1, collected + [buffer.baseAddress ?? UnsafePointer(bitPattern: AlignedBuffer.alignment)!])
        }
    }
    return try nest(0, [])
}
