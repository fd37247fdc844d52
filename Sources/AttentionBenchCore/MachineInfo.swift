import Attention
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What the numbers were measured on: CPU, OpenBLAS build and kernel, environment.
public struct MachineInfo: Sendable, Codable, Equatable {
    /// `model name` from `/proc/cpuinfo` (or the architecture when that is missing).
    public var cpuModel: String
    /// Processors this process may run on (`ProcessInfo.activeProcessorCount`).
    public var activeProcessors: Int
    /// Processors OpenBLAS detected.
    public var openblasProcessors: Int
    /// `openblas_get_config()`, e.g. `OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64`.
    public var openblasConfiguration: String
    /// The version number parsed from ``openblasConfiguration``.
    public var openblasVersion: String
    /// `openblas_get_corename()`: the compute kernel OpenBLAS runs, e.g. `Haswell`.
    public var openblasCore: String
    /// The shared library actually loaded, read from `/proc/self/maps`.
    public var openblasLibrary: String
    /// `pthread`, `OpenMP`, `serial` or `unknown`, from the library path and configuration.
    public var openblasThreading: String
    /// `OpenBLAS`'s thread count when the benchmark started (what `OPENBLAS_NUM_THREADS` set).
    public var openblasStartupThreads: Int
    /// `OPENBLAS_CORETYPE` as set in the environment, or `nil`.
    public var openblasCoretypeVariable: String?
    /// `OPENBLAS_NUM_THREADS` as set in the environment, or `nil`.
    public var openblasNumThreadsVariable: String?
    /// `release` or `debug`: how the benchmark itself was compiled.
    public var buildConfiguration: String
    /// The level the library's Swift kernels run at (`CPULevel.active`), e.g. `avx2`.
    public var cpuLevel: String
    /// The highest level this CPU supports (`CPULevel.supported`).
    public var cpuLevelSupported: String
    /// `ATTENTION_CPU_LEVEL` as set in the environment, or `nil`.
    public var cpuLevelVariable: String?

    public static func current() -> MachineInfo {
        let configuration = BLAS.configuration
        let library = loadedLibraryPath(containing: "openblas") ?? "unknown"
        let environment = ProcessInfo.processInfo.environment
        return MachineInfo(
            cpuModel: cpuModelName(),
            activeProcessors: ProcessInfo.processInfo.activeProcessorCount,
            openblasProcessors: BLAS.processorCount,
            openblasConfiguration: configuration.trimmingCharacters(in: .whitespaces),
            openblasVersion: version(in: configuration),
            openblasCore: BLAS.coreName,
            openblasLibrary: library,
            openblasThreading: threading(library: library, configuration: configuration),
            openblasStartupThreads: BLAS.threadCount,
            openblasCoretypeVariable: environment["OPENBLAS_CORETYPE"],
            openblasNumThreadsVariable: environment["OPENBLAS_NUM_THREADS"],
            buildConfiguration: buildConfiguration,
            cpuLevel: CPULevel.active.rawValue,
            cpuLevelSupported: CPULevel.supported.rawValue,
            cpuLevelVariable: environment["ATTENTION_CPU_LEVEL"])
    }

    static var buildConfiguration: String {
        #if DEBUG
        return "debug"
        #else
        return "release"
        #endif
    }

    static func cpuModelName() -> String {
        if let cpuinfo = readProcFile("/proc/cpuinfo") {
            for line in cpuinfo.split(separator: "\n") where line.hasPrefix("model name") {
                if let colon = line.firstIndex(of: ":") {
                    return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
        }
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// The first mapped file whose name contains `fragment`, e.g.
    /// `/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0`.
    static func loadedLibraryPath(containing fragment: String) -> String? {
        guard let maps = readProcFile("/proc/self/maps") else { return nil }
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let path = String(line[slash...])
            if path.split(separator: "/").last?.contains(fragment) == true { return path }
        }
        return nil
    }

    /// The whole of a `/proc` file. They report size 0, and Foundation's `String(contentsOfFile:)`
    /// was seen to return only the first 4 KiB of `/proc/self/maps`, so this reads to EOF.
    static func readProcFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func version(in configuration: String) -> String {
        let words = configuration.split(separator: " ")
        if let index = words.firstIndex(of: "OpenBLAS"), index + 1 < words.count {
            return String(words[index + 1])
        }
        return "unknown"
    }

    static func threading(library: String, configuration: String) -> String {
        if library.contains("openblas-openmp") || configuration.contains("USE_OPENMP") { return "OpenMP" }
        if library.contains("openblas-pthread") { return "pthread" }
        if library.contains("openblas-serial") { return "serial" }
        return "unknown"
    }
}

#if canImport(Glibc)
private let RUSAGE_SELF_WHO = __rusage_who_t(RUSAGE_SELF.rawValue)
#else
private let RUSAGE_SELF_WHO = RUSAGE_SELF
#endif

/// Resident-set sizes of this process.
public enum ResidentMemory {
    /// Peak resident set since the process started (`getrusage` `ru_maxrss`), in bytes.
    public static func peakBytes() -> Int {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF_WHO, &usage) == 0 else { return 0 }
        #if canImport(Darwin)
        return Int(usage.ru_maxrss)          // bytes on Darwin
        #else
        return Int(usage.ru_maxrss) * 1024   // KiB on Linux
        #endif
    }

    /// Peak resident set since the last ``resetPeak()`` (`VmHWM` of `/proc/self/status`), in
    /// bytes; ``peakBytes()`` where that file does not exist.
    public static func currentPeakBytes() -> Int {
        guard let status = MachineInfo.readProcFile("/proc/self/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return peakBytes() }
        return kib * 1024
    }

    /// Sets the peak that ``currentPeakBytes()`` reports to the resident set now (writes `5`
    /// to `/proc/self/clear_refs`, Linux 4.0 and later); does nothing elsewhere.
    public static func resetPeak() {
        if let handle = FileHandle(forWritingAtPath: "/proc/self/clear_refs") {
            handle.write(Data("5".utf8))
            try? handle.close()
        }
    }

    /// Resident set now (`/proc/self/statm`), in bytes; 0 where that file does not exist.
    public static func currentBytes() -> Int {
        guard let statm = MachineInfo.readProcFile("/proc/self/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
