// libFuzzer entry point for the checkpoint parsers (Scripts/fuzz_checkpoints.sh compiles it with
// the parser sources only): every input is parsed as a safetensors file, each tensor it declares
// is read and converted, and the same bytes are parsed as a sharded checkpoint's index. Any
// outcome but a crash, a sanitizer report or a hang is fine: bad input must throw.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCheckpointParsers(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    if let file = try? SafeTensorsFile(data: data) {
        for name in file.names { _ = try? file.tensor(name) }
        _ = file.metadata.count
    }
    _ = try? ShardedCheckpoint.parseWeightMap(data, name: "fuzz")
    return 0
}
