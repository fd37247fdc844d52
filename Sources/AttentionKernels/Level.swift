// What differs between the three compilations of this folder: SwiftPM defines
// ATTENTION_LEVEL_AVX2 (x86-64-v3) or ATTENTION_LEVEL_AVX512 (x86-64-v4) for the two upper
// targets, ATTENTION_FMA for both, and nothing for the baseline. Everything else is shared.
//
// Every helper here is `@inline(__always)` and non-generic: a helper the optimiser left out of
// line in an upper-level module could be a symbol that another module also emits, and the
// linker keeps one copy (Scripts/check_cpu_levels.sh checks that none exists).

/// The register width of the dot-product loops: one SSE, AVX2 or AVX-512 register of floats.
#if ATTENTION_LEVEL_AVX512
typealias Lanes = SIMD16<Float>
#elseif ATTENTION_LEVEL_AVX2
typealias Lanes = SIMD8<Float>
#else
typealias Lanes = SIMD4<Float>
#endif

// `a · b + c`. With FMA one rounding (`vfmadd`); on the baseline two, because `addingProduct`
// there compiles to a call of the `fmaf` library function per lane (DESIGN.md §4).

@inline(__always)
func multiplyAdd(_ a: Float, _ b: Float, _ c: Float) -> Float {
    #if ATTENTION_FMA
    c.addingProduct(a, b)
    #else
    a * b + c
    #endif
}

@inline(__always)
func multiplyAdd(_ a: SIMD4<Float>, _ b: SIMD4<Float>, _ c: SIMD4<Float>) -> SIMD4<Float> {
    #if ATTENTION_FMA
    c.addingProduct(a, b)
    #else
    a * b + c
    #endif
}

@inline(__always)
func multiplyAdd(_ a: SIMD8<Float>, _ b: SIMD8<Float>, _ c: SIMD8<Float>) -> SIMD8<Float> {
    #if ATTENTION_FMA
    c.addingProduct(a, b)
    #else
    a * b + c
    #endif
}

@inline(__always)
func multiplyAdd(_ a: SIMD16<Float>, _ b: SIMD16<Float>, _ c: SIMD16<Float>) -> SIMD16<Float> {
    #if ATTENTION_FMA
    c.addingProduct(a, b)
    #else
    a * b + c
    #endif
}

// A register folded to four lanes (pairwise halves), for the 4 × 4 transpose-add.

@inline(__always)
func foldToFour(_ v: SIMD4<Float>) -> SIMD4<Float> { v }

@inline(__always)
func foldToFour(_ v: SIMD8<Float>) -> SIMD4<Float> { v.lowHalf + v.highHalf }

@inline(__always)
func foldToFour(_ v: SIMD16<Float>) -> SIMD4<Float> { foldToFour(v.lowHalf + v.highHalf) }

@inline(__always)
func loadLanes(_ pointer: UnsafePointer<Float>) -> Lanes {
    UnsafeRawPointer(pointer).loadUnaligned(as: Lanes.self)
}

@inline(__always)
func storeLanes(_ value: Lanes, to pointer: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Lanes.self)
}
