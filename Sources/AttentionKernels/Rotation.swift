/// RoPE's rotation of head rows in place, with precomputed cosines and sines
/// (``AttentionKernelSet/rotate(_:rows:rowStride:headCount:headDim:cosines:sines:tableRows:halfSplit:)``).
///
/// `.halfSplit` keeps both members of a pair in two contiguous runs (`x[i]`, `x[i + half]`), so
/// a register of pairs rotates at once; `.interleaved` pairs neighbours and runs scalar.
enum Rotation {
    @inline(__always)
    static func rotate(
        _ heads: UnsafeMutablePointer<Float>, rows: Int, rowStride: Int, headCount: Int, headDim: Int,
        cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>, tableRows: Int, halfSplit: Bool
    ) {
        let half = headDim / 2
        var r = 0
        while r < rows {
            let t = r % tableRows
            let cosRow = cosines + t * half, sinRow = sines + t * half
            var head = 0
            while head < headCount {
                let x = heads + r * rowStride + head * headDim
                if halfSplit {
                    rotateHalves(x, x + half, count: half, cosines: cosRow, sines: sinRow)
                } else {
                    rotateNeighbours(x, pairs: half, cosines: cosRow, sines: sinRow)
                }
                head += 1
            }
            r += 1
        }
    }

    /// `(a, b) ← (a·c − b·s, a·s + b·c)` for `a = first[i]`, `b = second[i]`.
    @inline(__always)
    private static func rotateHalves(
        _ first: UnsafeMutablePointer<Float>, _ second: UnsafeMutablePointer<Float>, count: Int,
        cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>
    ) {
        let l = Lanes.scalarCount
        var i = 0
        while i + l <= count {
            let a = loadLanes(first + i), b = loadLanes(second + i)
            let c = loadLanes(cosines + i), s = loadLanes(sines + i)
            storeLanes(multiplyAdd(a, c, -(b * s)), to: first + i)
            storeLanes(multiplyAdd(a, s, b * c), to: second + i)
            i += l
        }
        while i < count {
            let a = first[i], b = second[i], c = cosines[i], s = sines[i]
            first[i] = multiplyAdd(a, c, -(b * s))
            second[i] = multiplyAdd(a, s, b * c)
            i += 1
        }
    }

    @inline(__always)
    private static func rotateNeighbours(
        _ x: UnsafeMutablePointer<Float>, pairs: Int, cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>
    ) {
        var i = 0
        while i < pairs {
            let a = x[2 * i], b = x[2 * i + 1], c = cosines[i], s = sines[i]
            x[2 * i] = multiplyAdd(a, c, -(b * s))
            x[2 * i + 1] = multiplyAdd(a, s, b * c)
            i += 1
        }
    }
}
