import Foundation
@testable import Attention

/// The float64 oracle: DESIGN.md §3 written out with plain loops, sharing no code with the
/// library beyond reading its config and weights.
///
///     q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ;  sinks: s·Wkᵀ, s·Wvᵀ, placed before the tokens
///     RoPE at positions 0..<S (sinks) and S + t (token t)
///     score[i, j] = q_i·k_j / √D + mask[i, j];  −∞ where causal hides token key j > i
///     p = softmax(score) (zeros when every score is −∞);  ctx = p·v;  out = ctx·Woᵀ
enum NaiveAttentionOracle {
    static func forward(_ model: MultiHeadAttention, x: Tensor, mask: Tensor? = nil) -> [Double] {
        let c = model.config
        let batch = x.shape[0], n = x.shape[1], dm = c.dModel
        let h = c.nHeads, hkv = c.numKVHeads, hd = c.headDim, s = c.numSinks
        let keyCount = s + n
        let wq = model.qProj.scalars.map(Double.init), wk = model.kProj.scalars.map(Double.init)
        let wv = model.vProj.scalars.map(Double.init), wo = model.outProj.scalars.map(Double.init)
        let sinks = (model.sinkStates?.scalars ?? [Float]()).map { Double($0) }

        func linear(_ input: ArraySlice<Double>, _ w: [Double], outputs: Int) -> [Double] {
            // Plain pointer loops: this runs in debug builds, where closures cost 10×.
            var result = [Double](repeating: 0, count: outputs)
            input.withUnsafeBufferPointer { input in
                w.withUnsafeBufferPointer { w in
                    for o in 0..<outputs {
                        var sum = 0.0
                        for e in 0..<dm { sum += input[e] * w[o * dm + e] }
                        result[o] = sum
                    }
                }
            }
            return result
        }

        func rotate(_ vector: [Double], position: Int) -> [Double] {
            guard c.useRoPE else { return vector }
            var result = vector
            let half = hd / 2
            for i in 0..<half {
                let frequency = pow(Double(c.ropeTheta), -2.0 * Double(i) / Double(hd))
                    * Double(c.ropeScaling ?? 1)
                let angle = Double(position) * frequency
                let (ia, ib) = c.ropePairing == .halfSplit ? (i, i + half) : (2 * i, 2 * i + 1)
                result[ia] = vector[ia] * cos(angle) - vector[ib] * sin(angle)
                result[ib] = vector[ia] * sin(angle) + vector[ib] * cos(angle)
            }
            return result
        }

        /// The mask entry for (b, head, query i, key column j over [sinks; tokens]).
        func maskValue(b: Int, head: Int, i: Int, j: Int) -> Double {
            guard let mask else { return 0 }
            let width = mask.shape.last!
            let column: Int
            if width == keyCount && s > 0 {
                column = j
            } else {
                guard j >= s else { return 0 }  // token-only masks leave sinks visible
                column = j - s
            }
            let index: Int
            if mask.rank == 2 {
                index = i * width + column
            } else {
                let mb = mask.shape[0] == 1 ? 0 : b
                let mh = mask.shape[1] == 1 ? 0 : head
                index = ((mb * mask.shape[1] + mh) * n + i) * width + column
            }
            return Double(mask.scalars[index])
        }

        var output = [Double](repeating: 0, count: batch * n * dm)
        for b in 0..<batch {
            // Keys and values over [sinks; tokens], each [keyCount][hkv * hd].
            var keys: [[Double]] = [], values: [[Double]] = [], queries: [[Double]] = []
            for j in 0..<s {
                let row = sinks[(j * dm)..<((j + 1) * dm)]
                keys.append(linear(row, wk, outputs: hkv * hd))
                values.append(linear(row, wv, outputs: hkv * hd))
            }
            for t in 0..<n {
                let row = x.scalars[((b * n + t) * dm)..<((b * n + t + 1) * dm)].map(Double.init)
                keys.append(linear(row[...], wk, outputs: hkv * hd))
                values.append(linear(row[...], wv, outputs: hkv * hd))
                queries.append(linear(row[...], wq, outputs: h * hd))
            }
            for j in 0..<keyCount {
                for g in 0..<hkv {
                    let rotated = rotate(Array(keys[j][(g * hd)..<((g + 1) * hd)]), position: j)
                    keys[j].replaceSubrange((g * hd)..<((g + 1) * hd), with: rotated)
                }
            }
            var context = [Double](repeating: 0, count: n * h * hd)
            for head in 0..<h {
                let g = head / (h / hkv)
                for i in 0..<n {
                    let q = rotate(Array(queries[i][(head * hd)..<((head + 1) * hd)]), position: s + i)
                    var scores = [Double](repeating: -.infinity, count: keyCount)
                    for j in 0..<keyCount {
                        let isToken = j >= s
                        if c.isCausal && isToken && (j - s) > i { continue }
                        var dot = 0.0
                        for e in 0..<hd { dot += q[e] * keys[j][g * hd + e] }
                        scores[j] = dot / Double(hd).squareRoot() + maskValue(b: b, head: head, i: i, j: j)
                    }
                    let maximum = scores.max() ?? -.infinity
                    guard maximum > -.infinity else { continue }  // sees nothing: zeros
                    let weights = scores.map { exp($0 - maximum) }
                    let total = weights.reduce(0, +)
                    for j in 0..<keyCount where weights[j] > 0 {
                        let p = weights[j] / total
                        for e in 0..<hd { context[(i * h + head) * hd + e] += p * values[j][g * hd + e] }
                    }
                }
            }
            for i in 0..<n {
                let out = linear(context[(i * h * hd)..<((i + 1) * h * hd)], wo, outputs: dm)
                for o in 0..<dm { output[(b * n + i) * dm + o] = out[o] }
            }
        }
        return output
    }
}
