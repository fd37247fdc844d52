import Foundation
import XCTest
@testable import Attention

/// The safetensors reader and writer (`SafeTensorsFile`): exact round trips, exact F16 and
/// BF16 conversion, and a thrown `AttentionError.invalidFile` naming the tensor and the rule —
/// never a trap — for every malformed file.
final class SafeTensorsTests: XCTestCase {
    // MARK: - Helpers

    /// A file from a header written by hand: the 8-byte length (or `declaredLength`), the
    /// header text, the buffer.
    func rawFile(_ header: String, buffer: [UInt8] = [], declaredLength: UInt64? = nil) -> Data {
        var data = Data()
        withUnsafeBytes(of: (declaredLength ?? UInt64(header.utf8.count)).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: buffer)
        return data
    }

    func float32Bytes(_ values: [Float]) -> [UInt8] {
        values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) }
    }

    func uint16Bytes(_ values: [UInt16]) -> [UInt8] {
        values.flatMap { value in withUnsafeBytes(of: value.littleEndian, Array.init) }
    }

    /// The header length a file declares in its first 8 bytes.
    func headerLength(_ data: Data) -> Int {
        Int(data.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }

    /// Every message about bytes handed to `SafeTensorsFile(data:)` starts with this.
    static let source = "safetensors data: "

    /// Asserts that reading `data` throws `invalidFile` whose message starts with ``source`` and
    /// mentions every string (what is wrong, the offending value, the rule).
    func assertRejected(
        _ data: Data, mentioning fragments: [String], _ note: String = "",
        file: StaticString = #filePath, line: UInt = #line
    ) {
        assertThrows(AttentionError.invalidFile, containing: [Self.source] + fragments, note,
                     file: file, line: line) {
            try SafeTensorsFile(data: data)
        }
    }

    /// What reading `data` must say when its first bytes already settle it: fewer than 8 bytes,
    /// or a declared header length over the bound or past the end. `nil` when the header itself
    /// must be parsed to know.
    func lengthFragments(_ data: Data) -> [String]? {
        guard data.count >= 8 else { return ["is \(data.count) bytes long", "must start with an 8-byte header length"] }
        let declared = data.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if declared > UInt64(SafeTensorsFile.maxHeaderByteCount) {
            return ["header length (\(declared) bytes)", "must be <= \(SafeTensorsFile.maxHeaderByteCount)"]
        }
        if declared > UInt64(data.count - 8) {
            return ["header length (\(declared) bytes)", "runs past the end of the file",
                    "(\(data.count - 8) bytes after the length)"]
        }
        return nil
    }

    /// A small valid file: two tensors and metadata.
    func sampleFile() throws -> Data {
        try SafeTensorsFile.encode(
            ["weight": try Tensor(shape: [2, 3], scalars: [1, -2, 3.5, 0, -0.0, 7]),
             "bias": try Tensor(shape: [3], scalars: [0.25, 0.5, 0.75])],
            metadata: ["format": "pt"])
    }

    // MARK: - A file that is fine

    func testRoundTripIsBitExact() throws {
        let special: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, .greatestFiniteMagnitude,
                                .leastNonzeroMagnitude, .leastNormalMagnitude, .pi,
                                Float(bitPattern: 0x7FC0_1234), Float(bitPattern: 0xFF80_0001)]
        let tensors: [String: Tensor] = [
            "special": try Tensor(shape: [3, 4], scalars: special),
            "scalar": try Tensor(shape: [], scalars: [42]),
            "empty": try Tensor(shape: [0, 5], scalars: []),
            "layers.0.attn.q_proj.weight": randomTensor([8, 8], seed: 3),
            "naïve \"quoted\"\n name": randomTensor([2, 1, 3], seed: 4),
        ]
        let metadata = ["format": "pt", "note": "tab\there, quote \" and ünïcödé 🚀", "": "empty key"]
        let data = try SafeTensorsFile.encode(tensors, metadata: metadata)
        XCTAssertEqual(headerLength(data) % 8, 0, "the header is padded to a multiple of 8 bytes")

        let file = try SafeTensorsFile(data: data)
        XCTAssertEqual(file.metadata, metadata)
        XCTAssertEqual(Set(file.names), Set(tensors.keys))
        for (name, tensor) in tensors {
            let read = try file.tensor(name)
            XCTAssertEqual(read.shape, tensor.shape, name)
            XCTAssertEqual(read.scalars.map(\.bitPattern), tensor.scalars.map(\.bitPattern), name)
            XCTAssertEqual(file.entries[name]?.dtype, .float32, name)
        }

        // Through the file system, and from a Data slice whose indices do not start at 0.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try SafeTensorsFile.write(tensors, metadata: metadata, to: url)
        let fromDisk = try SafeTensorsFile(contentsOf: url)
        XCTAssertEqual(try fromDisk.tensor("special").scalars.map(\.bitPattern), special.map(\.bitPattern))
        let padded = Data([9, 9, 9]) + data
        let slice = try SafeTensorsFile(data: padded[3...])
        XCTAssertEqual(slice.tensors().mapValues { $0.scalars.map(\.bitPattern) },
                       tensors.mapValues { $0.scalars.map(\.bitPattern) })
    }

    func testHeaderWrittenByTheReferenceLibraryIsAccepted() throws {
        // Shape of what `safetensors.torch.save_file` writes: metadata first, entries sorted
        // by dtype then name, header padded with spaces.
        let header = #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"# +
            #""b":{"dtype":"BF16","shape":[1,1],"data_offsets":[8,10]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        let file = try SafeTensorsFile(data: rawFile(padded, buffer: float32Bytes([1, 2]) + [0x80, 0x3F]))
        XCTAssertEqual(try file.tensor("a").scalars, [1, 2])
        XCTAssertEqual(try file.tensor("b").scalars, [1])
        XCTAssertEqual(try file.tensor("b").shape, [1, 1])
        XCTAssertEqual(file.names, ["a", "b"])
    }

    // MARK: - F16 and BF16

    func testFloat16BitPatternsConvertExactly() {
        let table: [(UInt16, Float)] = [
            (0x0000, 0), (0x3C00, 1), (0xC000, -2), (0x3555, 0x1.554p-2),
            (0x7BFF, 65504),                       // largest finite
            (0x0400, 0x1p-14),                     // smallest normal
            (0x0001, 0x1p-24),                     // smallest subnormal
            (0x03FF, 0x1.ff8p-15),                 // largest subnormal: 1023 · 2⁻²⁴
            (0x8001, -0x1p-24), (0x0200, 0x1p-15),
            (0x7C00, .infinity), (0xFC00, -.infinity),
        ]
        for (bits, expected) in table {
            let value = SafeTensorsFile.float(float16Bits: bits)
            XCTAssertEqual(value.bitPattern, expected.bitPattern,
                           "F16 0x\(String(bits, radix: 16)) → \(value), expected \(expected)")
        }
        XCTAssertEqual(SafeTensorsFile.float(float16Bits: 0x8000).bitPattern, (-0.0 as Float).bitPattern)
        // NaNs keep sign and payload: quiet 0x7E00 → 0x7FC00000; payload 0x7C01 → 0x7F802000.
        XCTAssertEqual(SafeTensorsFile.float(float16Bits: 0x7E00).bitPattern, 0x7FC0_0000)
        XCTAssertEqual(SafeTensorsFile.float(float16Bits: 0x7C01).bitPattern, 0x7F80_2000)
        XCTAssertEqual(SafeTensorsFile.float(float16Bits: 0xFE01).bitPattern, 0xFFC0_2000)
    }

    #if !(os(macOS) && arch(x86_64))
    /// Every one of the 65,536 patterns against the compiler's own `Float16` (absent on Intel Macs).
    func testFloat16ConversionMatchesSwiftFloat16ForEveryPattern() {
        for bits in UInt16.min...UInt16.max {
            let ours = SafeTensorsFile.float(float16Bits: bits)
            let swift = Float(Float16(bitPattern: bits))
            if swift.isNaN {
                XCTAssertTrue(ours.isNaN, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(ours.sign, swift.sign, "0x\(String(bits, radix: 16))")
            } else {
                XCTAssertEqual(ours.bitPattern, swift.bitPattern, "0x\(String(bits, radix: 16))")
            }
        }
    }
    #endif

    func testBFloat16IsTheTopHalfOfAFloat32() {
        let table: [(UInt16, UInt32)] = [
            (0x3F80, 0x3F80_0000), (0xC040, 0xC040_0000), (0x7F80, 0x7F80_0000), (0xFF80, 0xFF80_0000),
            (0x0001, 0x0001_0000), (0x8000, 0x8000_0000), (0x7FC1, 0x7FC1_0000), (0x7F7F, 0x7F7F_0000),
        ]
        for (bits, expected) in table {
            XCTAssertEqual(SafeTensorsFile.float(bfloat16Bits: bits).bitPattern, expected,
                           "BF16 0x\(String(bits, radix: 16))")
        }
        XCTAssertEqual(SafeTensorsFile.float(bfloat16Bits: 0xC040), -3)
    }

    func testReadsF16AndBF16AtUnalignedOffsets() throws {
        // F16 [3] occupies bytes 0..<6, so the F32 after it starts at an odd multiple of 2.
        let header = #"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,6]},"# +
            #""f":{"dtype":"F32","shape":[2],"data_offsets":[6,14]},"# +
            #""b":{"dtype":"BF16","shape":[1,3],"data_offsets":[14,20]}}"#
        let buffer = uint16Bytes([0x3C00, 0xC000, 0x0001]) + float32Bytes([1.5, -0.25])
            + uint16Bytes([0x3F80, 0x4049, 0xFF80])
        let file = try SafeTensorsFile(data: rawFile(header, buffer: buffer))
        XCTAssertEqual(try file.tensor("h").scalars, [1, -2, 0x1p-24])
        XCTAssertEqual(try file.tensor("f").scalars, [1.5, -0.25])
        XCTAssertEqual(try file.tensor("b").scalars, [1, 3.140625, -.infinity])
        XCTAssertEqual(file.entries["h"]?.dtype, .float16)
        XCTAssertEqual(file.entries["b"]?.dtype, .bfloat16)
        XCTAssertEqual(file.entries["b"]?.shape, [1, 3])
    }

    // MARK: - Malformed files: each throws, naming the tensor and the rule

    /// Cut anywhere, the file is rejected, and the message says where: too short for the
    /// length, a header running past the end, or the first tensor whose bytes run past the end.
    func testEveryTruncationThrows() throws {
        let data = try sampleFile()
        let bufferStart = 8 + headerLength(data)
        // The header lists "bias" ([3] F32, bytes 0..<12), then "weight" ([2, 3] F32, 12..<36).
        XCTAssertEqual(data.count - bufferStart, 36)
        for length in 0..<data.count {
            let truncated = data.prefix(length)
            let fragments: [String]
            if let settled = lengthFragments(truncated) {
                fragments = settled
            } else {
                let buffer = length - bufferStart
                let (name, offsets) = buffer < 12 ? ("bias", "[0, 12]") : ("weight", "[12, 36]")
                fragments = ["tensor \"\(name)\" data_offsets \(offsets)",
                             "end past the byte buffer (\(buffer) bytes)", "the file is truncated"]
            }
            assertRejected(truncated, mentioning: fragments, "truncated to \(length) of \(data.count) bytes")
        }
        assertRejected(data.prefix(5), mentioning: ["is 5 bytes long", "must start with an 8-byte header length"])
    }

    func testGarbageBytesThrow() throws {
        var generator = SeededGenerator(seed: 77)
        for length in [0, 1, 7, 8, 9, 16, 100, 1000] {
            for _ in 0..<20 {
                let bytes = Data((0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) })
                // 8 random bytes declare a header length over 100 MB (all but once in 10^11).
                let fragments = try XCTUnwrap(lengthFragments(bytes), "\(length) random bytes")
                assertRejected(bytes, mentioning: fragments, "\(length) random bytes")
            }
        }
        // Random bytes behind a plausible length and an opening brace.
        for _ in 0..<200 {
            let length = Int.random(in: 1...64, using: &generator)
            let body = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var data = rawFile("{", buffer: body, declaredLength: UInt64(length + 1))
            data.append(contentsOf: [UInt8](repeating: 0, count: Int.random(in: 0...8, using: &generator)))
            // What is wrong with random JSON is the parser's business; this checks "throws, never
            // traps" and that the message says which data it is about.
            assertRejected(data, mentioning: [], "brace and random bytes")
        }
        assertRejected(rawFile("not json at all"), mentioning: ["header must start with '{'", "starts with byte 0x6E"])
        assertRejected(rawFile("[1, 2]"), mentioning: ["header must start with '{'", "starts with byte 0x5B"])
        assertRejected(rawFile(""), mentioning: ["header must start with '{'", "it is empty"])
    }

    /// Flipping any header byte to any of several values must give a file that reads or a
    /// thrown error, never a trap.
    func testCorruptedHeaderBytesNeverTrap() throws {
        let data = try sampleFile()
        let headerEnd = 8 + headerLength(data)
        var accepted = 0, rejected = 0
        for index in 0..<headerEnd {
            for value: UInt8 in [0x00, 0x20, 0x22, 0x2C, 0x2D, 0x30, 0x39, 0x5B, 0x5D, 0x7B, 0x7D, 0xFF] {
                var corrupted = data
                corrupted[index] = value
                do {
                    _ = try SafeTensorsFile(data: corrupted).tensors()
                    accepted += 1
                } catch let error as AttentionError {
                    guard case .invalidFile = error else { return XCTFail("byte \(index) = \(value): \(error)") }
                    rejected += 1
                }
            }
        }
        XCTAssertGreaterThan(rejected, accepted, "most corruptions must be caught")
    }

    func testHugeOrOverlongHeaderLengthThrows() throws {
        let data = try sampleFile()
        for declared: UInt64 in [UInt64.max, UInt64(Int.max) + 1, UInt64(Int.max), 1 << 40, 100_000_001] {
            var bad = data
            withUnsafeBytes(of: declared.littleEndian) { bad.replaceSubrange(0..<8, with: $0) }
            assertRejected(bad, mentioning: ["header length (\(declared) bytes)", "100000000"], "length \(declared)")
        }
        var overlong = data
        let pastEnd = UInt64(data.count)  // fits the bound, runs past the end
        withUnsafeBytes(of: pastEnd.littleEndian) { overlong.replaceSubrange(0..<8, with: $0) }
        assertRejected(overlong, mentioning: ["header length (\(pastEnd) bytes)", "past the end"])
    }

    func testUnsupportedDTypeIsNamed() {
        for dtype in ["F64", "I64", "U8", "BOOL", "F8_E4M3", "f32", ""] {
            let header = #"{"layer.w":{"dtype":"\#(dtype)","shape":[1],"data_offsets":[0,4]}}"#
            assertRejected(rawFile(header, buffer: [0, 0, 0, 0]),
                           mentioning: ["\"layer.w\"", "dtype \(dtype)", "F32, F16 and BF16"], dtype)
        }
        assertRejected(rawFile(#"{"w":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, buffer: [0, 0, 0, 0]),
                       mentioning: ["\"w\"", "dtype must be a string", "not a number"])
    }

    func testMalformedEntriesNameTheTensorAndTheRule() {
        let four: [UInt8] = [0, 0, 128, 63]  // 1.0
        let cases: [(String, String, [UInt8], [String])] = [
            ("not an object", #"{"w":[1,2]}"#, [], ["\"w\"", "must be an object", "an array"]),
            ("no dtype", #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "no \"dtype\"", "every tensor needs dtype, shape and data_offsets"]),
            ("no shape", #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, four,
             ["\"w\"", "no \"shape\"", "every tensor needs dtype, shape and data_offsets"]),
            ("no offsets", #"{"w":{"dtype":"F32","shape":[1]}}"#, four,
             ["\"w\"", "no \"data_offsets\"", "every tensor needs dtype, shape and data_offsets"]),
            ("negative dimension", #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value -1", "must be >= 0"]),
            ("fractional dimension", #"{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value 1.0", "must be an integer"]),
            ("string dimension", #"{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value a string", "must be an integer"]),
            ("dimension past Int", #"{"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#,
             four, ["\"w\"", "99999999999999999999", "does not fit Int"]),
            ("element count past Int",
             #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape [4611686018427387904, 4]", "more elements than Int can count"]),
            ("byte count past Int", #"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#,
             four, ["\"w\"", "shape [4611686018427387904]", "more bytes than Int can count"]),
            ("three offsets", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, four,
             ["\"w\"", "data_offsets [0, 4, 8]", "must be two integers [begin, end]"]),
            ("begin after end", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, four,
             ["\"w\"", "data_offsets [4, 0]", "must have begin <= end"]),
            ("size differs from shape", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "span 4 bytes", "shape [2]", "needs 2 × 4 = 8"]),
            ("past the buffer", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, four,
             ["\"w\"", "data_offsets [0, 8]", "past the byte buffer (4 bytes)", "truncated"]),
            ("overlap", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, four + four,
             ["tensor \"b\" bytes [4, 8)", "overlap tensor \"a\" bytes [0, 8)", "tensors must not overlap"]),
            ("same bytes twice", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four,
             ["tensor \"b\" bytes [0, 4)", "overlap tensor \"a\" bytes [0, 4)", "tensors must not overlap"]),
            ("gap", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, four + four + four,
             ["buffer bytes 4..<8 before tensor \"b\"", "belong to no tensor", "must cover the buffer without gaps"]),
            ("trailing bytes", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four + [1, 2],
             ["the last 2 of the buffer's 6 bytes", "belong to no tensor", "must cover the buffer exactly"]),
            ("duplicate name", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four, ["not valid JSON", "duplicate key \"w\"", "at header byte 54"]),
            ("metadata not strings", #"{"__metadata__":{"epoch":3}}"#, [], ["__metadata__ value of \"epoch\"", "must be a string", "not a number"]),
            ("metadata not an object", #"{"__metadata__":"x"}"#, [], ["__metadata__ must be an object of strings", "not a string"]),
            ("trailing JSON", #"{} {}"#, [], ["not valid JSON", "unexpected '{' after the top-level value", "at header byte 3"]),
            ("unterminated", #"{"w":{"dtype":"F32""#, [], ["not valid JSON", "unterminated object", "at header byte 19"]),
            ("bad escape", #"{"\q":1}"#, [], ["not valid JSON", "invalid escape '\\q'", "at header byte 3"]),
            ("lone surrogate", #"{"\ud800":1}"#, [], ["not valid JSON", "unpaired surrogate", "at header byte 8"]),
            ("control character", "{\"a\tb\":1}", [], ["not valid JSON", "unescaped control character", "at header byte 3"]),
            ("leading zero", #"{"w":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#, four,
             ["not valid JSON", "number with a leading zero", "at header byte 29"]),
        ]
        for (note, header, buffer, fragments) in cases {
            assertRejected(rawFile(header, buffer: buffer), mentioning: fragments, note)
        }
    }

    func testDeepNestingAndInvalidUTF8Throw() {
        let deep = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        assertRejected(rawFile(deep), mentioning: ["not valid JSON", "nesting deeper than 64 levels", "at header byte 68"])
        var data = rawFile(#"{"w?":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#)
        data[8 + 3] = 0xFF  // the '?' of the name
        assertRejected(data, mentioning: ["not valid JSON", "string is not valid UTF-8", "at header byte 2"])
    }

    func testEmptyFileAndZeroSizeTensorsAreFine() throws {
        XCTAssertTrue(try SafeTensorsFile(data: rawFile("{}")).names.isEmpty)
        let file = try SafeTensorsFile(data: rawFile(
            #"{"a":{"dtype":"F16","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""c":{"dtype":"F32","shape":[2,0],"data_offsets":[4,4]}}"#, buffer: [0, 0, 0, 0]))
        XCTAssertEqual(try file.tensor("a").shape, [0])
        XCTAssertEqual(try file.tensor("c").shape, [2, 0])
        XCTAssertEqual(try file.tensor("b").scalars, [0])
    }

    func testMissingTensorIsNamed() throws {
        let file = try SafeTensorsFile(data: sampleFile())
        assertThrows(AttentionError.invalidFile,
                     containing: ["tensor \"layers.9.w\"", "is missing", "the file holds 2 tensor(s): \"bias\", \"weight\""]) {
            try file.tensor("layers.9.w")
        }
        XCTAssertFalse(file.contains("layers.9.w"))
        XCTAssertTrue(file.contains("bias"))
    }

    func testUnreadableAndUnwritablePathsThrowInvalidFile() throws {
        let missing = URL(fileURLWithPath: "/nonexistent-\(UUID())/w.safetensors")
        // The rule (the path must be readable, writable) is the system's reason, after the colon.
        assertThrows(AttentionError.invalidFile, containing: ["cannot read \(missing.path): "]) {
            try SafeTensorsFile(contentsOf: missing)
        }
        assertThrows(AttentionError.invalidFile, containing: ["cannot write \(missing.path): "]) {
            try SafeTensorsFile.write([:], to: missing)
        }
    }

    func testWriterRejectsTheReservedMetadataName() {
        assertThrows(AttentionError.invalidInput,
                     containing: ["tensor name \"__metadata__\"", "is reserved by the safetensors format for metadata"]) {
            try SafeTensorsFile.encode(["__metadata__": Tensor(zeros: [1])])
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        assertThrows(AttentionError.invalidInput, containing: ["tensor name \"__metadata__\"", "is reserved"]) {
            try SafeTensorsFile.write(["__metadata__": Tensor(zeros: [1])], to: url)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), "nothing written")
    }
}
