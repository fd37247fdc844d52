import CBLAS

/// The Swift face of OpenBLAS: single-precision GEMM and GEMV, and thread control.
///
/// This is the only file in the package that imports `CBLAS`. The library's BLAS products go
/// through `gemm` (128-row blocks of the projections of more than 4 rows, the kernels' block products) and `gemv`
/// (projections of up to 4 rows, a decoding query's `O += P·V`); a decoding query's scores
/// come from the Swift `DotProducts` kernel instead.
public enum BLAS {
    /// Number of threads OpenBLAS uses for one call (its `openblas_get_num_threads`): the size
    /// of its pool for ``sgemm(transposeA:transposeB:m:n:k:alpha:a:lda:b:ldb:beta:c:ldc:)`` and
    /// the app's own BLAS calls.
    ///
    /// Setting it changes the process-wide OpenBLAS pool, exactly as `OPENBLAS_NUM_THREADS`
    /// does at start-up; values below 1 are raised to 1. The layer and the kernels do not use
    /// this pool: they run every product on one OpenBLAS thread inside their own workers
    /// (``MultiHeadAttention/kernelWorkerCount``), so this count changes neither their speed
    /// nor their results.
    public static var threadCount: Int {
        get { Int(openblas_get_num_threads()) }
        set { openblas_set_num_threads(Int32(max(1, min(newValue, Int(Int32.max))))) }
    }

    /// Number of processors OpenBLAS detected.
    public static var processorCount: Int { Int(openblas_get_num_procs()) }

    /// The compute kernel OpenBLAS selected, e.g. `"Haswell"` or `"Cooperlake"`.
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// OpenBLAS's build description (version, threading model, core).
    public static var configuration: String {
        guard let config = openblas_get_config() else { return "unknown" }
        return String(cString: config)
    }

    /// Runs `body` with OpenBLAS limited to one thread per call, then restores the count.
    ///
    /// The projections and kernels parallelise over their own pieces on the layer's workers;
    /// their products must not also start OpenBLAS threads, whose pool would then spin on the
    /// workers' cores for about 70 ms after each call. Nested and concurrent scopes share
    /// one reference count, so the count saved by the first scope is the one restored by the last,
    /// and projections of another `forward` running at the same moment run on one thread too.
    static func withSingleThreadedCalls<Result>(_ body: () throws -> Result) rethrows -> Result {
        singleThreadScopes.withLock { scopes in
            if scopes.depth == 0 {
                scopes.savedThreadCount = threadCount
                if scopes.savedThreadCount != 1 { threadCount = 1 }
            }
            scopes.depth += 1
        }
        defer {
            singleThreadScopes.withLock { scopes in
                scopes.depth -= 1
                if scopes.depth == 0 && scopes.savedThreadCount != 1 {
                    threadCount = scopes.savedThreadCount
                }
            }
        }
        return try body()
    }

    private struct SingleThreadScopes {
        var depth = 0
        var savedThreadCount = 1
    }

    private static let singleThreadScopes = LockedValue(SingleThreadScopes())

    /// `C = alpha · op(A) · op(B) + beta · C`, row-major, with `op(X) = X` or `Xᵀ`.
    ///
    /// - Parameters:
    ///   - m, n, k: `op(A)` is `[m, k]`, `op(B)` is `[k, n]`, `C` is `[m, n]`.
    ///   - lda, ldb, ldc: row strides in elements, so a column slice of a wider matrix
    ///     (one head of `[seq, nHeads * headDim]`) is read in place.
    /// - Note: callers guarantee every size and stride fits OpenBLAS's 32-bit `blasint`;
    ///   `MultiHeadAttention` checks its inputs against ``AttentionLimits`` before calling.
    @inline(__always)
    static func gemm(
        transposeA: Bool = false, transposeB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        guard m > 0, n > 0 else { return }
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k),
            alpha, a, Int32(lda), b, Int32(ldb),
            beta, c, Int32(ldc))
    }

    /// `y = alpha · op(A) · x + beta · y`, row-major `A` of `[m, n]` with row stride `lda`.
    ///
    /// Single rows (decoding one token) go here rather than to `gemm`, which would pack the
    /// whole of `A` (a weight matrix, a block of cached keys) to multiply it by one vector.
    @inline(__always)
    static func gemv(
        transposeA: Bool = false, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>, incX: Int = 1,
        beta: Float = 0, y: UnsafeMutablePointer<Float>, incY: Int = 1
    ) {
        guard m > 0, n > 0 else { return }
        cblas_sgemv(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, Int32(m), Int32(n),
                    alpha, a, Int32(lda), x, Int32(incX), beta, y, Int32(incY))
    }

    /// Checked single-precision GEMM for callers outside the library (the benchmark measures
    /// the sgemm rate through it): `C = alpha · op(A) · op(B) + beta · C`, row-major.
    ///
    /// - Parameters:
    ///   - m, n, k: `op(A)` is `[m, k]`, `op(B)` is `[k, n]`, `C` is `[m, n]`.
    ///   - a, b, c: row-major buffers with row strides `lda`, `ldb`, `ldc`.
    /// - Throws: ``AttentionError/invalidInput(_:)`` when a size is negative, a stride is
    ///   shorter than its row, a size exceeds ``AttentionLimits/maxDimension``, or a buffer is
    ///   too small for the rows it must hold; nothing is written then.
    public static func sgemm(
        transposeA: Bool = false, transposeB: Bool = false,
        m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafeBufferPointer<Float>, lda: Int,
        b: UnsafeBufferPointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutableBufferPointer<Float>, ldc: Int
    ) throws {
        let limit = AttentionLimits.maxDimension
        for (name, value) in [("m", m), ("n", n), ("k", k), ("lda", lda), ("ldb", ldb), ("ldc", ldc)]
        where value < 0 || value > limit {
            throw AttentionError.invalidInput("sgemm \(name) (\(value)) must be in 0...\(limit)")
        }
        // (rows, columns) of A, B and C as stored.
        let shapes = [("a", transposeA ? (k, m) : (m, k), lda, a.count),
                      ("b", transposeB ? (n, k) : (k, n), ldb, b.count),
                      ("c", (m, n), ldc, c.count)]
        for (name, (rows, columns), stride, count) in shapes {
            guard stride >= max(1, columns) else {
                throw AttentionError.invalidInput(
                    "sgemm ld\(name) (\(stride)) must be >= the \(columns) columns of \(name)")
            }
            let needed = rows == 0 ? 0 : (rows - 1) * stride + columns
            guard count >= needed else {
                throw AttentionError.invalidInput(
                    "sgemm \(name) holds \(count) elements; [\(rows), \(columns)] with stride \(stride) needs \(needed)")
            }
        }
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            // op(A)·op(B) is empty: C = beta · C (A and B may be empty buffers).
            for row in 0..<m {
                for column in 0..<n { c[row * ldc + column] = beta == 0 ? 0 : beta * c[row * ldc + column] }
            }
            return
        }
        gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha,
             a: a.baseAddress!, lda: lda, b: b.baseAddress!, ldb: ldb, beta: beta,
             c: c.baseAddress!, ldc: ldc)
    }
}
