import AttentionBenchCore
import Foundation

exit(AttentionBenchCommand.main(arguments: Array(CommandLine.arguments.dropFirst())))
