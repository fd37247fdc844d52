import Attention
import Foundation

// Temporary driver; replaced by the ArgumentParser command.
let args = CommandLine.arguments
let n = Int(args.count > 1 ? args[1] : "1024")!
let causal = args.count > 2 && args[2] == "causal"
let workers = Int(args.count > 3 ? args[3] : "1")!
let kernelName = args.count > 4 ? args[4] : "flash"
let h = 12, d = 64

func rnd(_ shape: [Int]) -> Tensor { var s: UInt32 = 1; return try! Tensor(shape: shape, scalars: (0..<shape.reduce(1,*)).map { _ in s = s &* 1664525 &+ 1013904223; return Float(s >> 8) / Float(1 << 24) * 2 - 1 }) }
let q = rnd([1, n, h * d]), k = rnd([1, n, h * d]), v = rnd([1, n, h * d])
BLAS.threadCount = workers
func run() -> Double {
    let t = Date()
    _ = try! scaledDotProductAttention(queries: q, keys: k, values: v, nHeads: h, numKVHeads: h, isCausal: causal, kernel: kernelName == "flash" ? .flash : .reference, workers: workers)
    return Date().timeIntervalSince(t)
}
_ = run()
var times = (0..<5).map { _ in run() }.sorted()
let flops = 4.0 * Double(h * n * n * d) * (causal ? 0.5 : 1)
print("N=\(n) causal=\(causal) workers=\(workers) \(kernelName) core=\(BLAS.coreName): \(String(format: "%.2f ms  %.1f GF/s", times[2]*1000, flops / times[2] / 1e9))")
