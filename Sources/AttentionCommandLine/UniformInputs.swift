/// The commands' random inputs: `count` floats uniform in `[−1, 1)`, the same for the same seed
/// on every machine (a 64-bit LCG, the top 24 bits of each state).
public func uniformScalars(count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
    return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
        for i in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            buffer[i] = Float(state >> 40) * (2 / Float(1 << 24)) - 1
        }
        initialized = count
    }
}
