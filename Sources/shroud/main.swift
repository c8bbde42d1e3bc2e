import ArgumentParser
import Foundation

// The `shroud` command line. Exit status (DESIGN.md §5): 0 on success, 1 on a runtime failure with a
// one-line reason on stderr, 2 on a usage error.

struct Shroud: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shroud",
        abstract: "End-to-end encrypted voice, screen sharing, files and text.",
        version: "0.1.0",
        subcommands: [IdentityCommand.self, ContactCommand.self, ConnectCommand.self, MessageCommand.self, ChannelCommand.self, ListenCommand.self, FileCommand.self, DevicesCommand.self, MediaCommand.self, VoiceCommand.self, ScreenCommand.self])
}

let parsed: ParsableCommand
do {
    parsed = try Shroud.parseAsRoot(GlobalOptions.movedAfterSubcommand(Array(CommandLine.arguments.dropFirst())))
} catch {
    let message = Shroud.fullMessage(for: error)
    if Shroud.exitCode(for: error) == .success {
        print(message)
        exit(0)
    }
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(2)
}

do {
    var command = parsed
    try command.run()
} catch let code as ExitCode {
    exit(code.rawValue)
} catch let error as ValidationError {
    FileHandle.standardError.write(Data("shroud: \(error.message)\n".utf8))
    exit(2)
} catch {
    // `shroud --help`, `shroud help id` and a bare `shroud` reach here as ArgumentParser's own
    // errors from the help command it returned: those are help (exit 0) or usage (exit 2).
    switch Shroud.exitCode(for: error) {
    case .success:
        print(Shroud.fullMessage(for: error))
        exit(0)
    case .validationFailure:
        FileHandle.standardError.write(Data((Shroud.fullMessage(for: error) + "\n").utf8))
        exit(2)
    default:
        FileHandle.standardError.write(Data("shroud: \(oneLine(error))\n".utf8))
        exit(1)
    }
}
