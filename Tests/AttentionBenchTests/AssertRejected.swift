import AttentionBenchCore
import XCTest

/// Asserts that `attention-bench` refuses `arguments` as a usage error (exit status 64) with a
/// message that contains every string in `fragments`: the option, the value given and the
/// rule, where the message has them (swift-argument-parser's own messages name the option and
/// the value; the bench's validation names all three).
func assertRejected(
    _ arguments: [String], containing fragments: [String],
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertFalse(fragments.isEmpty, "\(arguments): assertRejected needs the message's fragments",
                   file: file, line: line)
    do {
        let command = try AttentionBenchCommand.parse(arguments)
        XCTFail("\(arguments): accepted, expected a usage error; parsed \(String(describing: command.workload).prefix(200))",
                file: file, line: line)
    } catch {
        let message = AttentionBenchCommand.message(for: error)
        XCTAssertEqual(AttentionBenchCommand.exitCode(for: error).rawValue, 64,
                       "\(arguments): \(message)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(message.contains(fragment), "\(arguments): message \"\(message)\" lacks \"\(fragment)\"",
                          file: file, line: line)
        }
    }
}
