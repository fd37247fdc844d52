import AttentionKernelInterface

extension SoftmaxStep {
    /// See ``AttentionKernelSet/softmaxStep(_:)``.
    @inline(__always)
    func run() {
        // Columns outside `visible`, and the SIMD padding, become −∞.
        VectorMath.maskScores(row, count: count, paddedCount: paddedCount, visible: visible, mask: mask)

        var blockMax = VectorMath.maximum(row, count: paddedCount)
        if blockMax == -.infinity && containsNaN(visible) {
            // Only NaN scores (an overflow, or a NaN input): the row must end NaN, not as
            // "saw nothing" zeros. NaNs beside finite scores propagate through the sum.
            blockMax = .nan
        }
        let previousMax = rowMax.pointee
        let newMax = blockMax.isNaN ? blockMax : max(previousMax, blockMax)
        if newMax == -.infinity {
            // Nothing visible yet: P row is zero, O and l stay zero.
            row.update(repeating: 0, count: count)
            return
        }
        let blockSum = VectorMath.exponentiateAndSum(row, count: paddedCount, shift: newMax)
        if previousMax == -.infinity {
            rowSum.pointee = blockSum
        } else if previousMax != newMax {
            let correction = VectorMath.exp2(VectorMath.Vector(repeating: previousMax - newMax))[0]
            rowSum.pointee = rowSum.pointee * correction + blockSum
            VectorMath.scale(accumulator, count: headDim, by: correction, into: accumulator)
        } else {
            rowSum.pointee += blockSum
        }
        rowMax.pointee = newMax
        if let dropout {
            var j = 0
            while j < count {
                row[j] *= dropout.factor(keyPosition: dropout.firstKeyPosition + j)
                j += 1
            }
        }
    }

    @inline(__always)
    private func containsNaN(_ columns: Range<Int>) -> Bool {
        var j = columns.lowerBound
        while j < columns.upperBound {
            if row[j].isNaN { return true }
            j += 1
        }
        return false
    }
}
