/// Register-blocked dot products of a few query vectors against many key rows: the score step
/// of a decoding query, where a BLAS call has too little work to amortise.
///
/// One decoding step asks, for each query head `m` of a GQA group and each cached key `j`,
/// `s[m, j] = q[m] · k[j]` with 64- or 128-wide rows. OpenBLAS's `sgemv` reads the key block
/// once per query head and reaches 15–20 GF/s on such short rows; `sgemm` packs the whole
/// block for a 2- or 3-row product. Here each key element is loaded once for two or three query
/// heads and stays in a register: for example four keys × two heads are eight independent
/// accumulators, and a 4 × 4 transpose-add turns them into eight scores. The blocking fits
/// the sixteen registers of SSE and AVX2 (and half of AVX-512's 32); a register holds
/// ``Lanes`` floats, 4, 8 or 16 by level. A head width that is not a multiple of the lane count
/// gets its last `headDim % Lanes.scalarCount` products added in a scalar pass after the vector
/// loops.
enum DotProducts {
    static let laneCount = Lanes.scalarCount

    /// `scores[m · scoreStride + j] = Σₑ queries[m · headDim + e] · keys[j · keyStride + e]`
    /// for `m < members`, `j < count`, any `headDim >= 1`.
    @inline(__always)
    static func scores(
        queries: UnsafePointer<Float>, members: Int, headDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        let vectorWidth = headDim - headDim % laneCount
        var member = 0
        while member + 3 <= members {
            threeQueries(queries + member * headDim, headDim: headDim, vectorWidth: vectorWidth, keys: keys,
                         keyStride: keyStride, count: count, into: scores + member * scoreStride,
                         scoreStride: scoreStride)
            member += 3
        }
        if member + 2 <= members {
            twoQueries(queries + member * headDim, queries + (member + 1) * headDim, vectorWidth: vectorWidth,
                       keys: keys, keyStride: keyStride, count: count,
                       into: scores + member * scoreStride, scores + (member + 1) * scoreStride)
            member += 2
        }
        if member < members {
            oneQuery(queries + member * headDim, vectorWidth: vectorWidth, keys: keys, keyStride: keyStride,
                     count: count, into: scores + member * scoreStride)
        }
        if vectorWidth < headDim {
            addTails(queries: queries, members: members, headDim: headDim, from: vectorWidth, keys: keys,
                     keyStride: keyStride, count: count, into: scores, scoreStride: scoreStride)
        }
    }

    /// `scores[m, j] += Σ_{e ≥ first} q[m, e] · k[j, e]`: the products the vector loops leave out.
    @inline(__always)
    private static func addTails(
        queries: UnsafePointer<Float>, members: Int, headDim: Int, from first: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        var m = 0
        while m < members {
            let q = queries + m * headDim
            var j = 0
            while j < count {
                let k = keys + j * keyStride
                var sum = scores[m * scoreStride + j]
                var e = first
                while e < headDim {
                    sum = multiplyAdd(q[e], k[e], sum)
                    e += 1
                }
                scores[m * scoreStride + j] = sum
                j += 1
            }
            m += 1
        }
    }

    /// `[Σa, Σb, Σc, Σd]`: the lane sums of four registers, folded to four lanes and then
    /// transposed and added by two pairwise shuffle-adds.
    @inline(__always)
    static func laneSums(_ a: Lanes, _ b: Lanes, _ c: Lanes, _ d: Lanes) -> SIMD4<Float> {
        let ab = SIMD8(lowHalf: foldToFour(a), highHalf: foldToFour(b))
        let cd = SIMD8(lowHalf: foldToFour(c), highHalf: foldToFour(d))
        let pairs = SIMD8(lowHalf: ab.evenHalf + ab.oddHalf, highHalf: cd.evenHalf + cd.oddHalf)
        return pairs.evenHalf + pairs.oddHalf
    }

    /// One key's score, for the keys past the last full group.
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, vectorWidth: Int) -> Float {
        var sum = Lanes()
        var e = 0
        while e < vectorWidth {
            sum = multiplyAdd(loadLanes(q + e), loadLanes(k + e), sum)
            e += laneCount
        }
        let four = foldToFour(sum)
        return (four[0] + four[1]) + (four[2] + four[3])
    }

    @inline(__always)
    static func store(_ value: SIMD4<Float>, to pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD4<Float>.self)
    }

    /// Three keys × three queries per step: nine accumulators, each key load used three times,
    /// and with three key and one query register that is fifteen of sixteen registers. (Four
    /// keys × three queries needs eighteen, and LLVM spills accumulators through memory: 25 %
    /// slower, measured on SSE.) The group of three scores per query is reduced by one
    /// transpose-add.
    @inline(__always)
    private static func threeQueries(
        _ q: UnsafePointer<Float>, headDim d: Int, vectorWidth w: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into s: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        let qa = q, qb = q + d, qc = q + 2 * d
        let sa = s, sb = s + scoreStride, sc = s + 2 * scoreStride
        var j = 0
        while j + 3 <= count {
            let k0 = keys + j * keyStride, k1 = k0 + keyStride, k2 = k1 + keyStride
            var a0 = Lanes(), a1 = Lanes(), a2 = Lanes()
            var b0 = Lanes(), b1 = Lanes(), b2 = Lanes()
            var c0 = Lanes(), c1 = Lanes(), c2 = Lanes()
            var e = 0
            while e < w {
                let x0 = loadLanes(k0 + e), x1 = loadLanes(k1 + e), x2 = loadLanes(k2 + e)
                let qa4 = loadLanes(qa + e)
                a0 = multiplyAdd(qa4, x0, a0); a1 = multiplyAdd(qa4, x1, a1); a2 = multiplyAdd(qa4, x2, a2)
                let qb4 = loadLanes(qb + e)
                b0 = multiplyAdd(qb4, x0, b0); b1 = multiplyAdd(qb4, x1, b1); b2 = multiplyAdd(qb4, x2, b2)
                let qc4 = loadLanes(qc + e)
                c0 = multiplyAdd(qc4, x0, c0); c1 = multiplyAdd(qc4, x1, c1); c2 = multiplyAdd(qc4, x2, c2)
                e += laneCount
            }
            let ra = laneSums(a0, a1, a2, Lanes()), rb = laneSums(b0, b1, b2, Lanes())
            let rc = laneSums(c0, c1, c2, Lanes())
            sa[j] = ra[0]; sa[j + 1] = ra[1]; sa[j + 2] = ra[2]
            sb[j] = rb[0]; sb[j + 1] = rb[1]; sb[j + 2] = rb[2]
            sc[j] = rc[0]; sc[j + 1] = rc[1]; sc[j + 2] = rc[2]
            j += 3
        }
        while j < count {
            let k = keys + j * keyStride
            sa[j] = dot(qa, k, vectorWidth: w)
            sb[j] = dot(qb, k, vectorWidth: w)
            sc[j] = dot(qc, k, vectorWidth: w)
            j += 1
        }
    }

    /// Four keys × two queries per step: eight accumulators, each key load used twice.
    @inline(__always)
    private static func twoQueries(
        _ qa: UnsafePointer<Float>, _ qb: UnsafePointer<Float>, vectorWidth d: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into sa: UnsafeMutablePointer<Float>, _ sb: UnsafeMutablePointer<Float>
    ) {
        var j = 0
        while j + 4 <= count {
            let k0 = keys + j * keyStride, k1 = k0 + keyStride, k2 = k1 + keyStride, k3 = k2 + keyStride
            var a0 = Lanes(), a1 = Lanes(), a2 = Lanes(), a3 = Lanes()
            var b0 = Lanes(), b1 = Lanes(), b2 = Lanes(), b3 = Lanes()
            var e = 0
            while e < d {
                let x0 = loadLanes(k0 + e), x1 = loadLanes(k1 + e), x2 = loadLanes(k2 + e), x3 = loadLanes(k3 + e)
                let qa4 = loadLanes(qa + e)
                a0 = multiplyAdd(qa4, x0, a0); a1 = multiplyAdd(qa4, x1, a1)
                a2 = multiplyAdd(qa4, x2, a2); a3 = multiplyAdd(qa4, x3, a3)
                let qb4 = loadLanes(qb + e)
                b0 = multiplyAdd(qb4, x0, b0); b1 = multiplyAdd(qb4, x1, b1)
                b2 = multiplyAdd(qb4, x2, b2); b3 = multiplyAdd(qb4, x3, b3)
                e += laneCount
            }
            store(laneSums(a0, a1, a2, a3), to: sa + j)
            store(laneSums(b0, b1, b2, b3), to: sb + j)
            j += 4
        }
        while j < count {
            let k = keys + j * keyStride
            sa[j] = dot(qa, k, vectorWidth: d)
            sb[j] = dot(qb, k, vectorWidth: d)
            j += 1
        }
    }

    /// Four keys × one query per step, two accumulators per key (eight in flight, as above).
    @inline(__always)
    private static func oneQuery(
        _ q: UnsafePointer<Float>, vectorWidth d: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int, into s: UnsafeMutablePointer<Float>
    ) {
        let l = laneCount
        var j = 0
        while j + 4 <= count {
            let k0 = keys + j * keyStride, k1 = k0 + keyStride, k2 = k1 + keyStride, k3 = k2 + keyStride
            var a0 = Lanes(), a1 = Lanes(), a2 = Lanes(), a3 = Lanes()
            var b0 = Lanes(), b1 = Lanes(), b2 = Lanes(), b3 = Lanes()
            var e = 0
            while e + 2 * l <= d {
                let qa4 = loadLanes(q + e), qb4 = loadLanes(q + e + l)
                a0 = multiplyAdd(qa4, loadLanes(k0 + e), a0); b0 = multiplyAdd(qb4, loadLanes(k0 + e + l), b0)
                a1 = multiplyAdd(qa4, loadLanes(k1 + e), a1); b1 = multiplyAdd(qb4, loadLanes(k1 + e + l), b1)
                a2 = multiplyAdd(qa4, loadLanes(k2 + e), a2); b2 = multiplyAdd(qb4, loadLanes(k2 + e + l), b2)
                a3 = multiplyAdd(qa4, loadLanes(k3 + e), a3); b3 = multiplyAdd(qb4, loadLanes(k3 + e + l), b3)
                e += 2 * l
            }
            if e < d {
                let qa4 = loadLanes(q + e)
                a0 = multiplyAdd(qa4, loadLanes(k0 + e), a0); a1 = multiplyAdd(qa4, loadLanes(k1 + e), a1)
                a2 = multiplyAdd(qa4, loadLanes(k2 + e), a2); a3 = multiplyAdd(qa4, loadLanes(k3 + e), a3)
            }
            store(laneSums(a0 + b0, a1 + b1, a2 + b2, a3 + b3), to: s + j)
            j += 4
        }
        while j < count {
            s[j] = dot(q, keys + j * keyStride, vectorWidth: d)
            j += 1
        }
    }
}
