/// Register-blocked dot products of a few query vectors against many key rows: the score step
/// of a decoding query, where a BLAS call has too little work to amortise.
///
/// One decoding step asks, for each query head `m` of a GQA group and each cached key `j`,
/// `s[m, j] = q[m] · k[j]` with 64- or 128-wide rows. OpenBLAS's `sgemv` reads the key block
/// once per query head and reaches 15–20 GF/s on such short rows; `sgemm` packs the whole
/// block for a 2- or 3-row product. Here each key element is loaded once for two query heads
/// and stays in a register: four keys × two heads are eight independent SSE accumulators, and a
/// 4 × 4 transpose-add turns them into eight scores. Written for baseline x86-64 (SSE2, 16
/// registers, no FMA) and arm64 code generation. A head width that is not a multiple of 4 gets
/// its last `headDim % 4` products added in a scalar pass after the vector loops, which run over
/// the first `headDim & ~3` elements only (for a multiple of 4 they are the whole width, and
/// the loops are exactly those measured above).
enum DotProducts {
    typealias Lanes = SIMD4<Float>

    /// `scores[m · scoreStride + j] = Σₑ queries[m · headDim + e] · keys[j · keyStride + e]`
    /// for `m < members`, `j < count`, any `headDim >= 1`.
    static func scores(
        queries: UnsafePointer<Float>, members: Int, headDim: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        let vectorWidth = headDim & ~3
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
    private static func addTails(
        queries: UnsafePointer<Float>, members: Int, headDim: Int, from first: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int,
        into scores: UnsafeMutablePointer<Float>, scoreStride: Int
    ) {
        for m in 0..<members {
            let q = queries + m * headDim
            for j in 0..<count {
                let k = keys + j * keyStride
                var sum = scores[m * scoreStride + j]
                for e in first..<headDim { sum += q[e] * k[e] }
                scores[m * scoreStride + j] = sum
            }
        }
    }

    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(pointer).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    static func store(_ value: Lanes, to pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Lanes.self)
    }

    /// `[Σa, Σb, Σc, Σd]`: the lane sums of four vectors, by two pairwise shuffle-adds.
    @inline(__always)
    static func laneSums(_ a: Lanes, _ b: Lanes, _ c: Lanes, _ d: Lanes) -> Lanes {
        let ab = SIMD8(lowHalf: a, highHalf: b), cd = SIMD8(lowHalf: c, highHalf: d)
        let pairs = SIMD8(lowHalf: ab.evenHalf + ab.oddHalf, highHalf: cd.evenHalf + cd.oddHalf)
        return pairs.evenHalf + pairs.oddHalf
    }

    /// One key's score, for the keys past the last group of four.
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, vectorWidth: Int) -> Float {
        var sum = Lanes()
        var e = 0
        while e < vectorWidth {
            sum += load(q + e) * load(k + e)
            e += 4
        }
        return (sum[0] + sum[1]) + (sum[2] + sum[3])
    }

    /// Three keys × three queries per step: nine accumulators, each key load used three times,
    /// and with three key and one query register that is fifteen of SSE's sixteen. (Four keys
    /// × three queries needs eighteen, and LLVM spills accumulators through memory: 25 %
    /// slower, measured.) The group of three scores per query is reduced by one transpose-add.
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
                let x0 = load(k0 + e), x1 = load(k1 + e), x2 = load(k2 + e)
                let qa4 = load(qa + e)
                a0 += qa4 * x0; a1 += qa4 * x1; a2 += qa4 * x2
                let qb4 = load(qb + e)
                b0 += qb4 * x0; b1 += qb4 * x1; b2 += qb4 * x2
                let qc4 = load(qc + e)
                c0 += qc4 * x0; c1 += qc4 * x1; c2 += qc4 * x2
                e += 4
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
                let x0 = load(k0 + e), x1 = load(k1 + e), x2 = load(k2 + e), x3 = load(k3 + e)
                let qa4 = load(qa + e)
                a0 += qa4 * x0; a1 += qa4 * x1; a2 += qa4 * x2; a3 += qa4 * x3
                let qb4 = load(qb + e)
                b0 += qb4 * x0; b1 += qb4 * x1; b2 += qb4 * x2; b3 += qb4 * x3
                e += 4
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
    private static func oneQuery(
        _ q: UnsafePointer<Float>, vectorWidth d: Int,
        keys: UnsafePointer<Float>, keyStride: Int, count: Int, into s: UnsafeMutablePointer<Float>
    ) {
        var j = 0
        while j + 4 <= count {
            let k0 = keys + j * keyStride, k1 = k0 + keyStride, k2 = k1 + keyStride, k3 = k2 + keyStride
            var a0 = Lanes(), a1 = Lanes(), a2 = Lanes(), a3 = Lanes()
            var b0 = Lanes(), b1 = Lanes(), b2 = Lanes(), b3 = Lanes()
            var e = 0
            while e + 8 <= d {
                let qa4 = load(q + e), qb4 = load(q + e + 4)
                a0 += qa4 * load(k0 + e); b0 += qb4 * load(k0 + e + 4)
                a1 += qa4 * load(k1 + e); b1 += qb4 * load(k1 + e + 4)
                a2 += qa4 * load(k2 + e); b2 += qb4 * load(k2 + e + 4)
                a3 += qa4 * load(k3 + e); b3 += qb4 * load(k3 + e + 4)
                e += 8
            }
            if e < d {
                let qa4 = load(q + e)
                a0 += qa4 * load(k0 + e); a1 += qa4 * load(k1 + e)
                a2 += qa4 * load(k2 + e); a3 += qa4 * load(k3 + e)
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
