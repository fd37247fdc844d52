import ArgumentParser
import Foundation

extension ParsableCommand {
    /// Parses `arguments`, runs the command and returns its exit status: 0, or ArgumentParser's
    /// code for the error (64 for bad arguments), the error on one stderr line prefixed by
    /// `name` (`"<name>: error: …"`); `--help` prints the help and returns 0.
    public static func exitStatus(name: String, arguments: [String]) -> Int32 {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            return 0
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                return 0
            }
            let message = Self.message(for: error).split(whereSeparator: \.isNewline).joined(separator: " ")
            FileHandle.standardError.write(Data("\(name): error: \(message)\n".utf8))
            return code.rawValue == 0 ? 1 : code.rawValue
        }
    }
}
