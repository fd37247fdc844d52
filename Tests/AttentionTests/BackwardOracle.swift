import Foundation
@testable import Attention

/// The float64 backward oracle (DESIGN.md §3b): the layer's forward written out once more with
/// every intermediate kept, then its reverse pass, with plain loops over `[Double]`, sharing no
/// code with the library. It is the reference the library's backward kernels are tested
/// against, and it is itself checked against central finite differences of its own forward
/// (`BackwardOracleTests`), whose output is checked against ``NaiveAttentionOracle``.
///
/// Forward, per batch row, with `in_j` the sink state `j` for `j < S` and token `j − S` after:
///
///     k_j = R(S… j) · Wk · in_j,  v_j = Wv · in_j,  q_t = R(S + t) · Wq · x_t
///     s_tj = q_t,h · k_j,g / √D + mask_tj   (−∞ where the causal or window rule hides token j)
///     p_tj = softmax_j(s_t·);  p̃_tj = p_tj · z_tj (dropout factor, 1 without dropout)
///     c_t,h = Σ_j p̃_tj · v_j,g;  y_t = Wo · c_t
///
/// Reverse, for `dy` (the gradient of the loss with respect to `y`):
///
///     dWo += dy_t ⊗ c_t;  dc_t = Woᵀ · dy_t
///     dv_j,g += p̃_tj · dc_t,h;  dp_tj = z_tj · (dc_t,h · v_j,g)
///     ds_tj = p_tj · (dp_tj − Σ_k p_tk · dp_tk)
///     dq_t,h += ds_tj · k_j,g / √D;  dk_j,g += ds_tj · q_t,h / √D
///     then through Rᵀ (the inverse rotation) and the projections into dx, dWq, dWk, dWv and,
///     for `j < S`, the sink states.
struct BackwardOracle {
    let config: AttentionConfig
    var wq: [Double], wk: [Double], wv: [Double], wo: [Double]
    /// `[S, dModel]`; empty without sinks.
    var sinkStates: [Double]

    /// Gradients of one backward pass, each shaped like what it differentiates.
    struct Gradients {
        var input: [Double]
        var qProj: [Double], kProj: [Double], vProj: [Double], outProj: [Double]
        var sinkStates: [Double]

        subscript(parameter: AttentionParameter) -> [Double] {
            switch parameter {
            case .qProj: qProj
            case .kProj: kProj
            case .vProj: vProj
            case .outProj: outProj
            case .sinkStates: sinkStates
            }
        }
    }

    init(_ model: MultiHeadAttention) {
        config = model.config
        wq = model.qProj.scalars.map(Double.init)
        wk = model.kProj.scalars.map(Double.init)
        wv = model.vProj.scalars.map(Double.init)
        wo = model.outProj.scalars.map(Double.init)
        sinkStates = (model.sinkStates?.scalars ?? [Float]()).map { Double($0) }
    }

    /// The parameter's values, for perturbing in a finite-difference check.
    subscript(parameter: AttentionParameter) -> [Double] {
        get {
            switch parameter {
            case .qProj: wq
            case .kProj: wk
            case .vProj: wv
            case .outProj: wo
            case .sinkStates: sinkStates
            }
        }
        set {
            switch parameter {
            case .qProj: wq = newValue
            case .kProj: wk = newValue
            case .vProj: wv = newValue
            case .outProj: wo = newValue
            case .sinkStates: sinkStates = newValue
            }
        }
    }

    /// `y`, `[batch, seq, dModel]`, for `x` `[batch, seq, dModel]` (every token a query).
    func forward(_ x: [Double], batch: Int, seq: Int, mask: Tensor? = nil, dropoutSeed: UInt64? = nil) -> [Double] {
        run(x, batch: batch, seq: seq, mask: mask, dropoutSeed: dropoutSeed, dy: nil).output
    }

    /// `y` and the gradients of `Σ dy ⊙ y`.
    func backward(
        _ x: [Double], batch: Int, seq: Int, dy: [Double], mask: Tensor? = nil, dropoutSeed: UInt64? = nil
    ) -> (output: [Double], gradients: Gradients) {
        let result = run(x, batch: batch, seq: seq, mask: mask, dropoutSeed: dropoutSeed, dy: dy)
        return (result.output, result.gradients!)
    }

    private func run(
        _ x: [Double], batch: Int, seq n: Int, mask: Tensor?, dropoutSeed: UInt64?, dy: [Double]?
    ) -> (output: [Double], gradients: Gradients?) {
        let c = config
        let dm = c.dModel, h = c.nHeads, hkv = c.numKVHeads, hd = c.headDim, s = c.numSinks
        let keyCount = s + n, kvWidth = hkv * hd, group = h / hkv
        let scale = 1 / Double(hd).squareRoot()
        let dropout = dropoutSeed.flatMap {
            c.dropout > 0 ? NaiveAttentionOracle.Dropout(probability: c.dropout, seed: $0) : nil
        }
        let maskValues = (mask?.scalars ?? [Float]()).map { Double($0) }
        let maskWidth = mask?.shape.last ?? 0
        let maskBatchStride = mask.map { $0.rank == 4 && $0.shape[0] > 1 ? $0.shape[1] * n * maskWidth : 0 } ?? 0
        let maskHeadStride = mask.map { $0.rank == 4 && $0.shape[1] > 1 ? n * maskWidth : 0 } ?? 0
        let maskCoversSinks = s > 0 && maskWidth == keyCount

        var output = [Double](repeating: 0, count: batch * n * dm)
        var gradients = dy.map { _ in
            Gradients(input: [Double](repeating: 0, count: x.count), qProj: zeros(wq.count),
                      kProj: zeros(wk.count), vProj: zeros(wv.count), outProj: zeros(wo.count),
                      sinkStates: zeros(sinkStates.count))
        }

        for b in 0..<batch {
            /// Input row `j` of this batch row's keys and values: a sink state, then a token.
            func keyInput(_ j: Int) -> ArraySlice<Double> {
                j < s ? sinkStates[(j * dm)..<((j + 1) * dm)] : x[((b * n + j - s) * dm)..<((b * n + j - s + 1) * dm)]
            }
            func token(_ t: Int) -> ArraySlice<Double> { x[((b * n + t) * dm)..<((b * n + t + 1) * dm)] }

            var keys = [[Double]](), values = [[Double]]()
            for j in 0..<keyCount {
                keys.append(rotate(linear(wk, keyInput(j), outputs: kvWidth), heads: hkv, position: j, inverse: false))
                values.append(linear(wv, keyInput(j), outputs: kvWidth))
            }
            let queries = (0..<n).map { rotate(linear(wq, token($0), outputs: dm), heads: h, position: s + $0, inverse: false) }

            // Weights p and dropped weights p̃ per (head, query, key).
            var weights = [[[Double]]](repeating: [[Double]](repeating: zeros(keyCount), count: n), count: h)
            var dropped = weights
            var contexts = [[Double]](repeating: zeros(dm), count: n)
            for head in 0..<h {
                let g = head / group
                for t in 0..<n {
                    var scores = [Double](repeating: -.infinity, count: keyCount)
                    for j in 0..<keyCount {
                        let tokenKey = j - s
                        if tokenKey >= 0 {
                            if c.isCausal && tokenKey > t { continue }
                        }
                        var score = 0.0
                        for e in 0..<hd { score += queries[t][head * hd + e] * keys[j][g * hd + e] }
                        score *= scale
                        if mask != nil {
                            let row = b * maskBatchStride + head * maskHeadStride + t * maskWidth
                            if maskCoversSinks {
                                score += maskValues[row + j]
                            } else if tokenKey >= 0 {
                                score += maskValues[row + tokenKey]
                            }
                        }
                        scores[j] = score
                    }
                    let maximum = scores.max()!
                    guard maximum > -.infinity else { continue }  // sees nothing: p = 0
                    let exps = scores.map { exp($0 - maximum) }
                    let total = exps.reduce(0, +)
                    let rowKey = dropout?.rowKey(batch: b, head: head, queryPosition: s + t)
                    for j in 0..<keyCount {
                        let p = exps[j] / total
                        weights[head][t][j] = p
                        let z = dropout.map { $0.factor(rowKey: rowKey!, keyPosition: j) } ?? 1
                        dropped[head][t][j] = p * z
                        for e in 0..<hd { contexts[t][head * hd + e] += p * z * values[j][g * hd + e] }
                    }
                }
            }
            for t in 0..<n {
                let y = linear(wo, contexts[t][...], outputs: dm)
                for o in 0..<dm { output[(b * n + t) * dm + o] = y[o] }
            }

            guard let dy, gradients != nil else { continue }
            // Reverse.
            var dKeys = [[Double]](repeating: zeros(kvWidth), count: keyCount), dValues = dKeys
            var dQueries = [[Double]](repeating: zeros(dm), count: n)
            for t in 0..<n {
                let dyRow = dy[((b * n + t) * dm)..<((b * n + t + 1) * dm)]
                addOuter(&gradients!.outProj, dyRow, contexts[t][...])
                let dContext = linearTransposed(wo, dyRow, inputs: dm)
                for head in 0..<h {
                    let g = head / group
                    var dWeights = zeros(keyCount)
                    for j in 0..<keyCount where weights[head][t][j] != 0 {
                        var dotProduct = 0.0
                        for e in 0..<hd {
                            dValues[j][g * hd + e] += dropped[head][t][j] * dContext[head * hd + e]
                            dotProduct += dContext[head * hd + e] * values[j][g * hd + e]
                        }
                        // dp = z · (dc · v), z = p̃ / p.
                        dWeights[j] = dropped[head][t][j] / weights[head][t][j] * dotProduct
                    }
                    var weighted = 0.0
                    for j in 0..<keyCount { weighted += weights[head][t][j] * dWeights[j] }
                    for j in 0..<keyCount where weights[head][t][j] != 0 {
                        let dScore = weights[head][t][j] * (dWeights[j] - weighted) * scale
                        for e in 0..<hd {
                            dQueries[t][head * hd + e] += dScore * keys[j][g * hd + e]
                            dKeys[j][g * hd + e] += dScore * queries[t][head * hd + e]
                        }
                    }
                }
            }
            for t in 0..<n {
                let dq = rotate(dQueries[t], heads: h, position: s + t, inverse: true)
                addOuter(&gradients!.qProj, dq[...], token(t))
                add(linearTransposed(wq, dq[...], inputs: dm), into: &gradients!.input, at: (b * n + t) * dm)
            }
            for j in 0..<keyCount {
                let dk = rotate(dKeys[j], heads: hkv, position: j, inverse: true)
                addOuter(&gradients!.kProj, dk[...], keyInput(j))
                addOuter(&gradients!.vProj, dValues[j][...], keyInput(j))
                var dInput = linearTransposed(wk, dk[...], inputs: dm)
                add(linearTransposed(wv, dValues[j][...], inputs: dm), into: &dInput, at: 0)
                if j < s {
                    add(dInput, into: &gradients!.sinkStates, at: j * dm)
                } else {
                    add(dInput, into: &gradients!.input, at: (b * n + j - s) * dm)
                }
            }
        }
        return (output, gradients)
    }

    /// RoPE at `position` on every head of `row`, or its inverse (the transposed rotation).
    private func rotate(_ row: [Double], heads: Int, position: Int, inverse: Bool) -> [Double] {
        guard config.useRoPE else { return row }
        let hd = config.headDim, half = hd / 2
        let (pairStride, pairOffset) = config.ropePairing == .halfSplit ? (1, half) : (2, 1)
        var out = row
        for i in 0..<half {
            let angle = Double(position)
                * pow(Double(config.ropeTheta), -2 * Double(i) / Double(hd)) * Double(config.ropeScaling ?? 1)
            let cosine = cos(angle), sine = inverse ? -sin(angle) : sin(angle)
            for head in 0..<heads {
                let ia = head * hd + i * pairStride, ib = ia + pairOffset
                out[ia] = row[ia] * cosine - row[ib] * sine
                out[ib] = row[ia] * sine + row[ib] * cosine
            }
        }
        return out
    }
}

private func zeros(_ count: Int) -> [Double] { [Double](repeating: 0, count: count) }

/// `W · input`, `W` `[outputs, input.count]` row-major.
private func linear(_ weight: [Double], _ input: ArraySlice<Double>, outputs: Int) -> [Double] {
    let inputs = input.count, first = input.startIndex
    return (0..<outputs).map { o in
        var sum = 0.0
        for e in 0..<inputs { sum += weight[o * inputs + e] * input[first + e] }
        return sum
    }
}

/// `Wᵀ · gradient`, `W` `[gradient.count, inputs]` row-major.
private func linearTransposed(_ weight: [Double], _ gradient: ArraySlice<Double>, inputs: Int) -> [Double] {
    var out = zeros(inputs)
    for (o, g) in gradient.enumerated() where g != 0 {
        for e in 0..<inputs { out[e] += weight[o * inputs + e] * g }
    }
    return out
}

/// `target[o, e] += a[o] · b[e]`, `target` `[a.count, b.count]` row-major.
private func addOuter(_ target: inout [Double], _ a: ArraySlice<Double>, _ b: ArraySlice<Double>) {
    let columns = b.count
    for (o, ao) in a.enumerated() where ao != 0 {
        for (e, be) in b.enumerated() { target[o * columns + e] += ao * be }
    }
}

private func add(_ values: [Double], into target: inout [Double], at offset: Int) {
    for (i, v) in values.enumerated() { target[offset + i] += v }
}
