import AttentionKernelInterface

/// This compilation's hot loops, at the level its target was built for (`Level.swift`).
///
/// Each entry point is a real function (`@inline(never)`), compiled here at this module's level,
/// with everything it calls inlined into it.
public enum LevelKernels: AttentionKernelSet {
    @inline(never)
    public static func softmaxStep(_ step: SoftmaxStep) {
        step.run()
    }

    @inline(never)
    public static func backwardStep(_ step: BackwardStep) {
        step.run()
    }

    @inline(never)
    public static func dotProducts(
        queries: UnsafePointer<Float>, members: Int, headDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        DotProducts.scores(queries: queries, members: members, headDim: headDim, keys: keys, keyStride: keyStride,
                           count: count, into: scores, scoreStride: scoreStride)
    }

    @inline(never)
    public static func scale(
        _ source: UnsafePointer<Float>, count: Int, by factor: Float, into target: UnsafeMutablePointer<Float>
    ) {
        VectorMath.scale(source, count: count, by: factor, into: target)
    }

    @inline(never)
    public static func exp2(_ x: Float) -> Float {
        VectorMath.exp2(VectorMath.Vector(repeating: x))[0]
    }

    @inline(never)
    public static func rotate(
        _ heads: UnsafeMutablePointer<Float>, rows: Int, rowStride: Int, headCount: Int, headDim: Int,
        cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>, tableRows: Int, halfSplit: Bool
    ) {
        Rotation.rotate(heads, rows: rows, rowStride: rowStride, headCount: headCount, headDim: headDim,
                        cosines: cosines, sines: sines, tableRows: tableRows, halfSplit: halfSplit)
    }
}
