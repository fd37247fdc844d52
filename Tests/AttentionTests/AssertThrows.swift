import XCTest
@testable import Attention

/// The case constructors of `AttentionError` (`AttentionError.invalidInput`, …), so a test can
/// say which one it expects.
typealias ErrorCase = (String) -> AttentionError

/// Asserts `body` throws an `AttentionError` of case `expected` whose message contains every
/// string in `fragments`.
///
/// DESIGN.md §3: the message names the parameter, its value and the rule, so a test passes
/// one fragment for each (for `KVCache(config:, batch: 0, capacity: 8)`: `"KVCache batch"`,
/// `"(0)"`, `"must be >= 1"`). A test that can say nothing about the message is not a test of
/// the error; `fragments` must not be empty.
func assertThrows<T>(
    _ expected: ErrorCase, containing fragments: [String],
    _ label: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line,
    _ body: () throws -> T
) {
    let label = label()
    let context = label.isEmpty ? "" : " [\(label)]"
    XCTAssertFalse(fragments.isEmpty, "assertThrows needs the message's fragments\(context)", file: file, line: line)
    do {
        let result = try body()
        XCTFail("expected a thrown AttentionError\(context), got \(String(describing: result).prefix(200))",
                file: file, line: line)
    } catch let error as AttentionError {
        XCTAssertEqual(error, expected(error.message),
                       "wrong AttentionError case\(context): \(error)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(error.message.contains(fragment),
                          "message \"\(error.message)\" lacks \"\(fragment)\"\(context)",
                          file: file, line: line)
        }
        XCTAssertTrue(error.description.hasSuffix(error.message), file: file, line: line)
    } catch {
        XCTFail("expected an AttentionError\(context), got \(type(of: error)): \(error)",
                file: file, line: line)
    }
}
