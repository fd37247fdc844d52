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

    /// Asserts that reading `data` throws `invalidFile` whose message mentions every string.
    func assertRejected(
        _ data: Data, mentioning fragments: [String], _ note: String = "",
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try SafeTensorsFile(data: data), note, file: file, line: line) { error in
            guard case .invalidFile(let message)? = error as? AttentionError else {
                return XCTFail("\(note): expected AttentionError.invalidFile, got \(error)", file: file, line: line)
            }
            for fragment in fragments where !message.contains(fragment) {
                XCTFail("\(note): message \"\(message)\" should mention \"\(fragment)\"", file: file, line: line)
            }
        }
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

    func testEveryTruncationThrows() throws {
        let data = try sampleFile()
        for length in 0..<data.count {
            assertRejected(data.prefix(length), mentioning: [], "truncated to \(length) of \(data.count) bytes")
        }
        assertRejected(data.prefix(data.count - 1), mentioning: ["\"weight\"", "truncated"])
        assertRejected(data.prefix(5), mentioning: ["5 bytes", "8-byte header length"])
    }

    func testGarbageBytesThrow() {
        var generator = SeededGenerator(seed: 77)
        for length in [0, 1, 7, 8, 9, 16, 100, 1000] {
            for _ in 0..<20 {
                let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                assertRejected(Data(bytes), mentioning: [], "\(length) random bytes")
            }
        }
        // Random bytes behind a plausible length and an opening brace.
        for _ in 0..<200 {
            let length = Int.random(in: 1...64, using: &generator)
            let body = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var data = rawFile("{", buffer: body, declaredLength: UInt64(length + 1))
            data.append(contentsOf: [UInt8](repeating: 0, count: Int.random(in: 0...8, using: &generator)))
            assertRejected(data, mentioning: [], "brace and random bytes")
        }
        assertRejected(rawFile("not json at all"), mentioning: ["must start with '{'"])
        assertRejected(rawFile("[1, 2]"), mentioning: ["must start with '{'"])
        assertRejected(rawFile(""), mentioning: ["must start with '{'", "empty"])
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
                       mentioning: ["\"w\"", "dtype must be a string"])
    }

    func testMalformedEntriesNameTheTensorAndTheRule() {
        let four: [UInt8] = [0, 0, 128, 63]  // 1.0
        let cases: [(String, String, [UInt8], [String])] = [
            ("not an object", #"{"w":[1,2]}"#, [], ["\"w\"", "must be an object", "an array"]),
            ("no dtype", #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, four, ["\"w\"", "no \"dtype\""]),
            ("no shape", #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, four, ["\"w\"", "no \"shape\""]),
            ("no offsets", #"{"w":{"dtype":"F32","shape":[1]}}"#, four, ["\"w\"", "no \"data_offsets\""]),
            ("negative dimension", #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value -1", ">= 0"]),
            ("fractional dimension", #"{"w":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value 1.0", "integer"]),
            ("string dimension", #"{"w":{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "shape value a string"]),
            ("dimension past Int", #"{"w":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#,
             four, ["\"w\"", "99999999999999999999", "does not fit Int"]),
            ("element count past Int",
             #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "more elements than Int"]),
            ("byte count past Int", #"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}}"#,
             four, ["\"w\"", "more bytes than Int"]),
            ("three offsets", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, four,
             ["\"w\"", "[0, 4, 8]", "two integers"]),
            ("begin after end", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}"#, four,
             ["\"w\"", "[4, 0]", "begin <= end"]),
            ("size differs from shape", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, four,
             ["\"w\"", "span 4 bytes", "shape [2]", "needs 2 × 4 = 8"]),
            ("past the buffer", #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, four,
             ["\"w\"", "[0, 8]", "past the byte buffer (4 bytes)", "truncated"]),
            ("overlap", #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, four + four,
             ["\"a\"", "\"b\"", "overlap"]),
            ("same bytes twice", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four, ["\"a\"", "\"b\"", "overlap"]),
            ("gap", #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#, four + four + four,
             ["4..<8", "\"b\"", "without gaps"]),
            ("trailing bytes", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four + [1, 2],
             ["last 2", "6 bytes", "exactly"]),
            ("duplicate name", #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"# +
                #""w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four, ["duplicate key \"w\""]),
            ("metadata not strings", #"{"__metadata__":{"epoch":3}}"#, [], ["__metadata__", "\"epoch\"", "a number"]),
            ("metadata not an object", #"{"__metadata__":"x"}"#, [], ["__metadata__", "a string"]),
            ("trailing JSON", #"{} {}"#, [], ["not valid JSON", "after the top-level value"]),
            ("unterminated", #"{"w":{"dtype":"F32""#, [], ["not valid JSON"]),
            ("bad escape", #"{"\q":1}"#, [], ["not valid JSON", "invalid escape"]),
            ("lone surrogate", #"{"\ud800":1}"#, [], ["not valid JSON", "surrogate"]),
            ("control character", "{\"a\tb\":1}", [], ["not valid JSON", "control character"]),
            ("leading zero", #"{"w":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#, four,
             ["not valid JSON", "leading zero"]),
        ]
        for (note, header, buffer, fragments) in cases {
            assertRejected(rawFile(header, buffer: buffer), mentioning: fragments, note)
        }
    }

    func testDeepNestingAndInvalidUTF8Throw() {
        let deep = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        assertRejected(rawFile(deep), mentioning: ["nesting deeper than 64"])
        var data = rawFile(#"{"w?":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#)
        data[8 + 3] = 0xFF  // the '?' of the name
        assertRejected(data, mentioning: ["UTF-8"])
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
        XCTAssertThrowsError(try file.tensor("layers.9.w")) { error in
            XCTAssertEqual(error as? AttentionError, .invalidFile(
                "tensor \"layers.9.w\" is missing; the file holds 2 tensor(s): \"bias\", \"weight\""))
        }
        XCTAssertFalse(file.contains("layers.9.w"))
        XCTAssertTrue(file.contains("bias"))
    }

    func testUnreadableAndUnwritablePathsThrowInvalidFile() throws {
        let missing = URL(fileURLWithPath: "/nonexistent-\(UUID())/w.safetensors")
        XCTAssertThrowsError(try SafeTensorsFile(contentsOf: missing)) { error in
            guard case .invalidFile(let message)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains(missing.path), message)
        }
        XCTAssertThrowsError(try SafeTensorsFile.write([:], to: missing)) { error in
            guard case .invalidFile(let message)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("cannot write"), message)
        }
    }

    func testWriterRejectsTheReservedMetadataName() {
        XCTAssertThrowsError(try SafeTensorsFile.encode(["__metadata__": Tensor(zeros: [1])])) { error in
            guard case .invalidInput(let message)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("__metadata__"), message)
        }
    }
}
