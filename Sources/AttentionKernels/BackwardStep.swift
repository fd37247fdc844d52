import AttentionKernelInterface

extension BackwardStep {
    /// See ``AttentionKernelSet/backwardStep(_:)``.
    @inline(__always)
    func run() {
        // Columns outside `visible`, and the SIMD padding, get p = 0; the padding of dP̃ was
        // never written, so it is cleared before it meets a zero weight (0 · NaN is NaN).
        VectorMath.maskScores(scores, count: count, paddedCount: paddedCount, visible: visible, mask: mask)
        (gradient + count).update(repeating: 0, count: paddedCount - count)

        let shift = VectorMath.Vector(repeating: logSumExp), dot = VectorMath.Vector(repeating: outputDot)
        var j = 0
        while j < paddedCount {
            let p = VectorMath.exp2(VectorMath.load(scores + j) - shift)
            var dP = VectorMath.load(gradient + j)
            var dropped = p
            if let dropout {
                var factors = VectorMath.Vector()
                for lane in 0..<VectorMath.width {
                    factors[lane] = dropout.factor(keyPosition: dropout.firstKeyPosition + j + lane)
                }
                dropped = p * factors
                dP = dP * factors
            }
            var dS = p * (dP - dot)
            // Hidden keys and empty rows: exactly 0, whatever dP̃ holds.
            dS.replace(with: 0, where: p .== 0)
            VectorMath.store(dropped, to: scores + j)
            VectorMath.store(dS, to: gradient + j)
            j += VectorMath.width
        }
    }
}
