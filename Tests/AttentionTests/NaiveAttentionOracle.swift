import Foundation
@testable import Attention

/// The float64 oracle: DESIGN.md §3 written out with plain loops, sharing no code with the
/// library beyond reading its config and weights.
///
///     q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ;  sinks: s·Wkᵀ, s·Wvᵀ, placed before the tokens
///     RoPE at positions 0..<S (sinks) and S + t (token t)
///     score[i, j] = q_i·k_j / √D + mask[i, j], and −∞ where a rule hides token key j from
///                   token query i: causal (j > i), window (j <= i − window); sinks never
///     p = softmax(score) (zeros when every score is −∞);  training: p[i, j] ·= dropout factor
///     ctx = p·v;  out = ctx·Woᵀ
///
/// Only the last `queryCount` query rows are computed, at the cost of those rows alone (plus
/// the keys and values of every token), so one query against 1,000 keys is cheap.
///
/// Debug builds run this, where array subscripts, ranges and closures cost 10×: the hot loops
/// are `while` loops over flat `[Double]` buffers through unsafe pointers.
enum NaiveAttentionOracle {
    /// Output rows `[batch, queryCount, dModel]` of the last `queryCount` tokens of `x`.
    ///
    /// - Parameters:
    ///   - x: `[batch, L, dModel]`, every token of the sequence (a cache's prefix, then the queries).
    ///   - mask: as `forward(_:mask:)` takes it; only when every token is a query.
    ///   - window: token query at position `p` sees token keys at positions `> p − window`.
    ///   - dropoutSeed: training mode with `config.dropout` and this seed; `nil` is evaluation.
    static func forward(
        _ model: MultiHeadAttention, x: Tensor, mask: Tensor? = nil, queryCount: Int? = nil,
        window: Int? = nil, dropoutSeed: UInt64? = nil
    ) -> [Double] {
        let c = model.config
        let batch = x.shape[0], length = x.shape[1], dm = c.dModel
        let h = c.nHeads, hkv = c.numKVHeads, hd = c.headDim, s = c.numSinks
        let nq = queryCount ?? length, firstQuery = length - nq
        precondition(nq >= 0 && nq <= length, "queryCount \(nq) outside 0...\(length)")
        precondition(mask == nil || nq == length, "a mask needs every token to be a query")
        let keyCount = s + length, kvWidth = hkv * hd, group = h / hkv
        let scale = 1 / Double(hd).squareRoot()

        let wq = model.qProj.scalars.map(Double.init), wk = model.kProj.scalars.map(Double.init)
        let wv = model.vProj.scalars.map(Double.init), wo = model.outProj.scalars.map(Double.init)
        let sinkStates = (model.sinkStates?.scalars ?? [Float]()).map { Double($0) }
        let xs = x.scalars.map(Double.init)
        let maskScalars = (mask?.scalars ?? [Float]()).map { Double($0) }
        let dropout = dropoutSeed.flatMap { c.dropout > 0 ? Dropout(probability: c.dropout, seed: $0) : nil }

        // RoPE frequencies invFreq[i] · scaling, and one position's cosines and sines.
        let half = hd / 2
        let frequencies = (0..<half).map {
            pow(Double(c.ropeTheta), -2 * Double($0) / Double(hd)) * Double(c.ropeScaling ?? 1)
        }
        var cosines = [Double](repeating: 0, count: half), sines = cosines
        let (pairStride, pairOffset) = c.ropePairing == .halfSplit ? (1, half) : (2, 1)

        // Mask strides over [batch, heads, rows, width] (0 where broadcast), and whether its
        // first S columns are the sinks'.
        let maskWidth = mask?.shape.last ?? 0
        let maskBatchStride = mask.map { $0.rank == 4 && $0.shape[0] > 1 ? $0.shape[1] * length * maskWidth : 0 } ?? 0
        let maskHeadStride = mask.map { $0.rank == 4 && $0.shape[1] > 1 ? length * maskWidth : 0 } ?? 0
        let maskCoversSinks = s > 0 && maskWidth == keyCount

        var keys = [Double](repeating: 0, count: keyCount * kvWidth), values = keys
        var queries = [Double](repeating: 0, count: nq * dm)
        var context = [Double](repeating: 0, count: nq * dm)
        var scores = [Double](repeating: 0, count: keyCount)
        var output = [Double](repeating: 0, count: batch * nq * dm)

        frequencies.withUnsafeBufferPointer { frequencies in
        cosines.withUnsafeMutableBufferPointer { cosines in
        sines.withUnsafeMutableBufferPointer { sines in
        wq.withUnsafeBufferPointer { wq in
        wk.withUnsafeBufferPointer { wk in
        wv.withUnsafeBufferPointer { wv in
        wo.withUnsafeBufferPointer { wo in
        sinkStates.withUnsafeBufferPointer { sinkStates in
        xs.withUnsafeBufferPointer { xs in
        maskScalars.withUnsafeBufferPointer { maskScalars in
        keys.withUnsafeMutableBufferPointer { keys in
        values.withUnsafeMutableBufferPointer { values in
        queries.withUnsafeMutableBufferPointer { queries in
        context.withUnsafeMutableBufferPointer { context in
        scores.withUnsafeMutableBufferPointer { scores in
        output.withUnsafeMutableBufferPointer { output in
            let keys = keys.baseAddress!, values = values.baseAddress!, queries = queries.baseAddress!
            let context = context.baseAddress!, scores = scores.baseAddress!
            let cosines = cosines.baseAddress!, sines = sines.baseAddress!

            /// Rotates `heads` heads of `row` in place by `position` (nothing without RoPE).
            func rotate(_ row: UnsafeMutablePointer<Double>, heads: Int, position: Int) {
                guard c.useRoPE else { return }
                var i = 0
                while i < half {
                    let angle = Double(position) * frequencies[i]
                    cosines[i] = cos(angle)
                    sines[i] = sin(angle)
                    i += 1
                }
                var head = 0
                while head < heads {
                    let v = row + head * hd
                    i = 0
                    while i < half {
                        let ia = i * pairStride, ib = ia + pairOffset
                        let a = v[ia], b = v[ib]
                        v[ia] = a * cosines[i] - b * sines[i]
                        v[ib] = a * sines[i] + b * cosines[i]
                        i += 1
                    }
                    head += 1
                }
            }

            for b in 0..<batch {
                // Keys and values over [sinks; tokens], each row [hkv · hd], post-RoPE keys.
                for j in 0..<keyCount {
                    let input = j < s ? sinkStates.baseAddress! + j * dm : xs.baseAddress! + (b * length + j - s) * dm
                    linear(input, wk.baseAddress!, inputs: dm, outputs: kvWidth, into: keys + j * kvWidth)
                    linear(input, wv.baseAddress!, inputs: dm, outputs: kvWidth, into: values + j * kvWidth)
                    rotate(keys + j * kvWidth, heads: hkv, position: j)
                }
                for i in 0..<nq {
                    let t = firstQuery + i
                    linear(xs.baseAddress! + (b * length + t) * dm, wq.baseAddress!, inputs: dm, outputs: dm,
                           into: queries + i * dm)
                    rotate(queries + i * dm, heads: h, position: s + t)
                }
                context.update(repeating: 0, count: nq * dm)
                for head in 0..<h {
                    let g = head / group
                    for i in 0..<nq {
                        let t = firstQuery + i
                        let q = queries + i * dm + head * hd
                        let maskRow = mask == nil ? nil
                            : maskScalars.baseAddress! + b * maskBatchStride + head * maskHeadStride + i * maskWidth
                        var maximum = -Double.infinity
                        for j in 0..<keyCount {
                            scores[j] = -.infinity
                            let token = j - s  // token index of key j; negative for a sink
                            if token >= 0 {
                                if c.isCausal && token > t { continue }
                                if let window, token <= t - window { continue }
                            }
                            var score = dot(q, keys + j * kvWidth + g * hd, count: hd) * scale
                            if let maskRow {
                                if maskCoversSinks { score += maskRow[j] } else if token >= 0 { score += maskRow[token] }
                            }
                            scores[j] = score
                            maximum = max(maximum, score)
                        }
                        guard maximum > -.infinity else { continue }  // sees nothing: zeros
                        var total = 0.0
                        for j in 0..<keyCount {
                            scores[j] = exp(scores[j] - maximum)
                            total += scores[j]
                        }
                        let rowKey = dropout?.rowKey(batch: b, head: head, queryPosition: s + t)
                        let out = context + i * dm + head * hd
                        for j in 0..<keyCount where scores[j] > 0 {
                            var p = scores[j] / total
                            if let dropout, let rowKey { p *= dropout.factor(rowKey: rowKey, keyPosition: j) }
                            let v = values + j * kvWidth + g * hd
                            var e = 0
                            while e < hd { out[e] += p * v[e]; e += 1 }
                        }
                    }
                }
                for i in 0..<nq {
                    linear(context + i * dm, wo.baseAddress!, inputs: dm, outputs: dm,
                           into: output.baseAddress! + (b * nq + i) * dm)
                }
            }
        }}}}}}}}}}}}}}}}
        return output
    }

    /// `out[o] = Σ_e input[e] · weight[o, e]`, weight `[outputs, inputs]` row-major.
    private static func linear(
        _ input: UnsafePointer<Double>, _ weight: UnsafePointer<Double>, inputs: Int, outputs: Int,
        into out: UnsafeMutablePointer<Double>
    ) {
        var o = 0
        while o < outputs {
            out[o] = dot(input, weight + o * inputs, count: inputs)
            o += 1
        }
    }

    /// `Σ a[e] · b[e]`, four sums at a time (a third faster in a debug build).
    private static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, count: Int) -> Double {
        var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, e = 0
        while e + 4 <= count {
            s0 += a[e] * b[e]
            s1 += a[e + 1] * b[e + 1]
            s2 += a[e + 2] * b[e + 2]
            s3 += a[e + 3] * b[e + 3]
            e += 4
        }
        while e < count {
            s0 += a[e] * b[e]
            e += 1
        }
        return (s0 + s1) + (s2 + s3)
    }

    /// Dropout as documented (DESIGN.md §3, `DropoutMask`), rewritten here rather than called:
    /// the factor of weight (b, h, query position, key position) hashes those four numbers
    /// with the seed through SplitMix64's finaliser; it keeps the weight, scaled by `1/(1 − p)`,
    /// when the top 32 bits of the hash are at least `p · 2³²` (rounded), and is 0 otherwise.
    struct Dropout {
        let seed: UInt64
        let keepScale: Double
        let threshold: UInt64

        init(probability: Float, seed: UInt64) {
            self.seed = seed
            keepScale = 1 / (1 - Double(probability))
            threshold = UInt64((Double(probability) * 0x1p32).rounded())
        }

        func rowKey(batch: Int, head: Int, queryPosition: Int) -> UInt64 {
            var key = Self.finalise(seed)
            key = Self.finalise(key ^ UInt64(batch))
            key = Self.finalise(key ^ UInt64(head))
            return Self.finalise(key ^ UInt64(queryPosition))
        }

        func factor(rowKey: UInt64, keyPosition: Int) -> Double {
            Self.finalise(rowKey ^ UInt64(keyPosition)) >> 32 >= threshold ? keepScale : 0
        }

        /// SplitMix64's output function (Steele, Lea & Flood 2014; Vigna's constants).
        static func finalise(_ value: UInt64) -> UInt64 {
            var z = value &+ 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
