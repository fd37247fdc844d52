import Foundation

/// Element types a safetensors file may store for this library. Every one becomes `Float` on
/// load; files are written as `F32`.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    /// IEEE 754 binary32, the library's native type; loaded bit for bit.
    case float32 = "F32"
    /// IEEE 754 binary16; every value, subnormals, ±∞ and NaN payloads included, converts
    /// exactly.
    case float16 = "F16"
    /// bfloat16, the top 16 bits of a binary32; converts exactly.
    case bfloat16 = "BF16"

    /// Bytes per element.
    public var byteCount: Int { self == .float32 ? 4 : 2 }
}

/// A safetensors file (Hugging Face's format, what `safetensors.torch.save_file` writes), read
/// and checked in full before any tensor is handed out.
///
/// Layout: an 8-byte little-endian header length `n`, `n` bytes of JSON, then the byte buffer.
/// The JSON maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`, with
/// offsets relative to the buffer, and may hold `"__metadata__"`, a map of strings to strings.
///
/// ```
/// let file = try SafeTensorsFile(contentsOf: url)
/// let x = try file.tensor("input")                     // F32, F16 or BF16 on disk; fp32 here
/// try SafeTensorsFile.write(["output": y], metadata: ["step": "1"], to: outputURL)
/// ```
///
/// Reading never traps on a malformed file: each of these throws
/// ``AttentionError/invalidFile(_:)`` naming the tensor (where there is one), the value and
/// the rule —
/// a file shorter than 8 bytes; a header length over ``maxHeaderByteCount`` or past the end of
/// the file; a header that is not UTF-8 JSON object text starting with `{`, or repeats a key; an
/// entry that is not an object with a string `dtype`, a `shape` of integers ≥ 0 and two
/// integer `data_offsets`; a dtype other than F32, F16 and BF16; `begin > end`; a byte count
/// that differs from `shape`'s element count times the dtype's size (or overflows `Int`);
/// a tensor that ends past the buffer (a truncated file); two tensors that overlap; bytes that
/// no tensor covers (a gap, or trailing bytes). The last three rules together say that the
/// tensors tile the buffer exactly, as the safetensors specification requires.
public struct SafeTensorsFile: Sendable {
    /// Where one tensor lives in the file.
    public struct Entry: Sendable, Equatable {
        /// The tensor's name, e.g. `"layers.3.attn.q_proj.weight"`.
        public let name: String
        /// Its element type on disk.
        public let dtype: SafeTensorsDType
        /// Its shape; `[]` is a scalar (one element).
        public let shape: [Int]
        /// Its bytes, relative to the start of the byte buffer (`data_offsets`).
        public let byteRange: Range<Int>
    }

    /// Largest accepted JSON header, 100 MB: the bound the reference implementation uses.
    public static let maxHeaderByteCount = 100_000_000

    /// The file's `__metadata__` (empty when it has none).
    public let metadata: [String: String]
    /// Every tensor, by name.
    public let entries: [String: Entry]
    /// The tensor names in file order (by data offset).
    public let names: [String]

    /// The whole file, indexed from 0.
    private let data: Data
    /// Where the byte buffer (after the header) starts in `data`.
    private let bufferStart: Int

    /// Maps the file at `url` into memory and checks its header: tensors are read from the
    /// mapping when asked for, so loading one layer of a multi-GB shard touches only that
    /// layer's pages (and the header's).
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when the file cannot be read or breaks a
    ///   rule of the format (see the type's documentation).
    public init(contentsOf url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: .alwaysMapped)
        } catch {
            throw AttentionError.invalidFile("cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data, source: url.lastPathComponent)
    }

    /// Parses and checks the bytes of a safetensors file.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` when `data` breaks a rule of the format.
    public init(data: Data) throws {
        try self.init(data: data, source: nil)
    }

    private init(data: Data, source: String?) throws {
        let data = data.startIndex == 0 ? data : Data([UInt8](data))  // indices from 0, even for a slice
        let file = source.map { "safetensors file \($0)" } ?? "safetensors data"
        func fail(_ message: String) -> AttentionError { .invalidFile("\(file): \(message)") }

        guard data.count >= 8 else {
            throw fail("is \(data.count) bytes long; it must start with an 8-byte header length")
        }
        var declared: UInt64 = 0
        for i in (0..<8).reversed() { declared = declared << 8 | UInt64(data[i]) }
        guard declared <= UInt64(Self.maxHeaderByteCount) else {
            throw fail("header length (\(declared) bytes) must be <= \(Self.maxHeaderByteCount)")
        }
        let headerCount = Int(declared)
        guard headerCount <= data.count - 8 else {
            throw fail("header length (\(headerCount) bytes) runs past the end of the file "
                + "(\(data.count - 8) bytes after the length); the file is truncated or not safetensors")
        }
        let header = [UInt8](data[8..<(8 + headerCount)])
        guard header.first == UInt8(ascii: "{") else {
            throw fail("header must start with '{'; "
                + (header.isEmpty ? "it is empty" : "it starts with byte 0x\(String(header[0], radix: 16, uppercase: true))"))
        }
        let json: SafeTensorsJSON.Value
        do {
            json = try SafeTensorsJSON.parse(header)
        } catch let failure as SafeTensorsJSON.Failure {
            throw fail("header is not valid JSON: \(failure.message) at header byte \(failure.offset)")
        }
        guard case .object(let members) = json else {
            throw fail("header must be a JSON object")  // unreachable after the '{' check
        }
        let bufferCount = data.count - 8 - headerCount

        var metadata: [String: String] = [:]
        var entries: [String: Entry] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw fail("__metadata__ must be an object of strings, not \(value.kindName)")
                }
                for (key, item) in pairs {
                    guard case .string(let text) = item else {
                        throw fail("__metadata__ value of \"\(key)\" must be a string, not \(item.kindName)")
                    }
                    metadata[key] = text
                }
                continue
            }
            entries[name] = try Self.entry(name: name, value, bufferCount: bufferCount, fail: fail)
        }

        // The tensors must tile the buffer: sorted by offset, each starts where the previous ends.
        let ordered = entries.values.sorted {
            ($0.byteRange.lowerBound, $0.byteRange.upperBound, $0.name)
                < ($1.byteRange.lowerBound, $1.byteRange.upperBound, $1.name)
        }
        var covered = 0
        var previous: Entry?
        for entry in ordered {
            if entry.byteRange.lowerBound < covered, let previous {
                throw fail("tensor \"\(entry.name)\" bytes \(Self.describe(entry.byteRange)) overlap "
                    + "tensor \"\(previous.name)\" bytes \(Self.describe(previous.byteRange)); tensors must not overlap")
            }
            if entry.byteRange.lowerBound > covered {
                throw fail("buffer bytes \(covered)..<\(entry.byteRange.lowerBound) before tensor \"\(entry.name)\" "
                    + "belong to no tensor; the tensors must cover the buffer without gaps")
            }
            covered = entry.byteRange.upperBound
            previous = entry
        }
        guard covered == bufferCount else {
            throw fail("the last \(bufferCount - covered) of the buffer's \(bufferCount) bytes belong to no tensor; "
                + "the tensors must cover the buffer exactly")
        }

        self.metadata = metadata
        self.entries = entries
        self.names = ordered.map(\.name)
        self.data = data
        self.bufferStart = 8 + headerCount
    }

    private static func describe(_ range: Range<Int>) -> String { "[\(range.lowerBound), \(range.upperBound))" }

    /// Checks one header entry against the rules of the format and the buffer's size.
    private static func entry(
        name: String, _ value: SafeTensorsJSON.Value, bufferCount: Int,
        fail: (String) -> AttentionError
    ) throws -> Entry {
        let tensor = "tensor \"\(name)\""
        guard case .object(let fields) = value else {
            throw fail("\(tensor) must be an object with dtype, shape and data_offsets, not \(value.kindName)")
        }
        func field(_ key: String) throws -> SafeTensorsJSON.Value {
            guard let value = fields.first(where: { $0.key == key })?.value else {
                throw fail("\(tensor) has no \"\(key)\"; every tensor needs dtype, shape and data_offsets")
            }
            return value
        }
        func integers(_ key: String) throws -> [Int] {
            let value = try field(key)
            guard case .array(let items) = value else {
                throw fail("\(tensor) \(key) must be an array of integers, not \(value.kindName)")
            }
            return try items.map { item in
                guard case .number(let text) = item else {
                    throw fail("\(tensor) \(key) value \(item.kindName) must be an integer")
                }
                guard text.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
                    throw fail("\(tensor) \(key) value \(text) must be an integer")
                }
                guard let number = Int(text) else { throw fail("\(tensor) \(key) value \(text) does not fit Int") }
                guard number >= 0 else { throw fail("\(tensor) \(key) value \(number) must be >= 0") }
                return number
            }
        }

        let dtypeField = try field("dtype")
        guard case .string(let dtypeName) = dtypeField else {
            throw fail("\(tensor) dtype must be a string, not \(dtypeField.kindName)")
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            throw fail("\(tensor) has dtype \(dtypeName); supported dtypes are F32, F16 and BF16")
        }
        let shape = try integers("shape")
        let offsets = try integers("data_offsets")
        guard offsets.count == 2 else {
            throw fail("\(tensor) data_offsets \(offsets) must be two integers [begin, end]")
        }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin <= end else {
            throw fail("\(tensor) data_offsets [\(begin), \(end)] must have begin <= end")
        }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw fail("\(tensor) shape \(shape) has more elements than Int can count") }
            count = product
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteCount)
        guard !overflow else { throw fail("\(tensor) shape \(shape) has more bytes than Int can count") }
        guard end - begin == byteCount else {
            throw fail("\(tensor) data_offsets [\(begin), \(end)] span \(end - begin) bytes; shape \(shape) of "
                + "\(dtypeName) needs \(count) × \(dtype.byteCount) = \(byteCount)")
        }
        guard end <= bufferCount else {
            throw fail("\(tensor) data_offsets [\(begin), \(end)] end past the byte buffer (\(bufferCount) bytes); "
                + "the file is truncated")
        }
        return Entry(name: name, dtype: dtype, shape: shape, byteRange: begin..<end)
    }

    /// Whether the file holds a tensor called `name`.
    public func contains(_ name: String) -> Bool { entries[name] != nil }

    /// The tensor called `name`, converted to fp32.
    ///
    /// - Throws: ``AttentionError/invalidFile(_:)`` naming `name` when the file has no such
    ///   tensor.
    public func tensor(_ name: String) throws -> Tensor {
        guard let entry = entries[name] else {
            let listed = names.prefix(8).map { "\"\($0)\"" }.joined(separator: ", ")
            throw AttentionError.invalidFile(
                "tensor \"\(name)\" is missing; the file holds \(names.count) tensor(s)"
                    + (names.isEmpty ? "" : ": \(listed)\(names.count > 8 ? ", …" : "")"))
        }
        return tensor(entry)
    }

    /// Every tensor, converted to fp32.
    public func tensors() -> [String: Tensor] {
        entries.mapValues { tensor($0) }
    }

    private func tensor(_ entry: Entry) -> Tensor {
        let count = entry.byteRange.count / entry.dtype.byteCount
        var scalars = [Float](repeating: 0, count: count)
        data.withUnsafeBytes { raw in
            let source = UnsafeRawBufferPointer(
                rebasing: raw[(bufferStart + entry.byteRange.lowerBound)..<(bufferStart + entry.byteRange.upperBound)])
            scalars.withUnsafeMutableBufferPointer { scalars in
                switch entry.dtype {
                case .float32:
                    for i in 0..<count {
                        let bits = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                        scalars[i] = Float(bitPattern: bits)
                    }
                case .float16:
                    for i in 0..<count {
                        let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                        scalars[i] = Self.float(float16Bits: bits)
                    }
                case .bfloat16:
                    for i in 0..<count {
                        let bits = UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                        scalars[i] = Self.float(bfloat16Bits: bits)
                    }
                }
            }
        }
        // The count came from the shape, so this cannot fail.
        return try! Tensor(shape: entry.shape, scalars: scalars)
    }

    /// The binary32 value of a binary16 bit pattern, exact for every pattern: normal numbers
    /// re-bias the exponent (15 → 127), subnormals (`m · 2⁻²⁴`) become normal binary32 numbers,
    /// ±∞ stay infinite and NaNs keep their sign and payload (shifted into the top of the
    /// binary32 fraction). Written with bit operations so it does not need `Float16`, which
    /// Swift lacks on macOS for Intel.
    static func float(float16Bits bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let fraction = UInt32(bits & 0x03FF)
        switch exponent {
        case 0:
            // ±0 or a subnormal: fraction · 2⁻²⁴, exact in binary32 (10 significant bits).
            let magnitude = Float(fraction) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | fraction << 13)
        default:
            return Float(bitPattern: sign | (exponent + 127 - 15) << 23 | fraction << 13)
        }
    }

    /// The binary32 value of a bfloat16 bit pattern: the pattern is the top half of a binary32.
    static func float(bfloat16Bits bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    // MARK: - Writing

    /// The bytes of a safetensors file holding `tensors` as F32 and `metadata` as
    /// `__metadata__`.
    ///
    /// Tensors are laid out in name order; the header is padded with spaces to a multiple of 8
    /// bytes so that the buffer starts aligned, as `safetensors.torch.save_file` does. The
    /// result reads back bit for bit, NaN payloads included, in this library and in PyTorch.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` when a tensor is named `__metadata__` (the
    ///   format reserves that key).
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) throws -> Data {
        if tensors["__metadata__"] != nil {
            throw AttentionError.invalidInput(
                "tensor name \"__metadata__\" is reserved by the safetensors format for metadata; rename the tensor")
        }
        let names = tensors.keys.sorted()
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map {
                SafeTensorsJSON.quoted($0) + ":" + SafeTensorsJSON.quoted(metadata[$0]!)
            }
            members.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        for name in names {
            let tensor = tensors[name]!
            let byteCount = tensor.count * 4
            members.append(SafeTensorsJSON.quoted(name) + ":{\"dtype\":\"F32\",\"shape\":["
                + tensor.shape.map(String.init).joined(separator: ",") + "],\"data_offsets\":["
                + "\(offset),\(offset + byteCount)]}")
            offset += byteCount
        }
        var header = Array(("{" + members.joined(separator: ",") + "}").utf8)
        header += [UInt8](repeating: UInt8(ascii: " "), count: (8 - header.count % 8) % 8)

        var data = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: header)
        for name in names {
            let littleEndian = tensors[name]!.scalars.map { $0.bitPattern.littleEndian }
            littleEndian.withUnsafeBytes { data.append(contentsOf: $0) }
        }
        return data
    }

    /// Writes `tensors` (as F32) and `metadata` to a safetensors file at `url`, replacing any
    /// file there atomically.
    ///
    /// - Throws: ``AttentionError/invalidInput(_:)`` for a tensor named `__metadata__`;
    ///   ``AttentionError/invalidFile(_:)`` when the file cannot be written.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
        let bytes = try encode(tensors, metadata: metadata)
        do {
            try bytes.write(to: url, options: .atomic)
        } catch {
            throw AttentionError.invalidFile("cannot write \(url.path): \(error.localizedDescription)")
        }
    }
}
