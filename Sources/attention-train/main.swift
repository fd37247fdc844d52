import AttentionTrainCore
import Foundation

exit(AttentionTrainCommand.main(arguments: Array(CommandLine.arguments.dropFirst())))
