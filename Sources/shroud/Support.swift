import ArgumentParser
import Foundation

/// Options every subcommand accepts.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Profile directory (default: $SHROUD_HOME, else $XDG_DATA_HOME/shroud).", valueName: "DIR"))
    var home: String?

    @Flag(name: .long, help: "Print one JSON object per line on stdout, for scripts.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Relay URL, ws://HOST:PORT (default: $SHROUD_SERVER, else the last one used by this profile).", valueName: "URL"))
    var server: String?

    /// The profile directory, resolved as DESIGN.md §5 says.
    var resolvedHome: String {
        let environment = ProcessInfo.processInfo.environment
        if let home, !home.isEmpty { return absolute(home) }
        if let home = environment["SHROUD_HOME"], !home.isEmpty { return absolute(home) }
        if let data = environment["XDG_DATA_HOME"], !data.isEmpty { return absolute(data) + "/shroud" }
        return NSHomeDirectory() + "/.local/share/shroud"
    }

    var output: Output { Output(json: json) }

    /// Global options written before the subcommand (`shroud --home D id show`) are moved after it,
    /// where every subcommand declares them, so both placements work.
    static func movedAfterSubcommand(_ arguments: [String]) -> [String] {
        let withValue: Set<String> = ["--home", "--server"]
        let flags: Set<String> = ["--json"]
        var leading: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            if flags.contains(argument) || (withValue.contains(name) && argument.contains("=")) {
                leading.append(argument)
                index += 1
            } else if withValue.contains(argument), index + 1 < arguments.count {
                leading.append(contentsOf: arguments[index...index + 1])
                index += 2
            } else {
                break
            }
        }
        let rest = Array(arguments[index...])
        guard !leading.isEmpty, !rest.isEmpty else { return arguments }
        // Keep a trailing "--" (end of options) last if present.
        if let terminator = rest.firstIndex(of: "--") {
            return Array(rest[..<terminator]) + leading + Array(rest[terminator...])
        }
        return rest + leading
    }

    private func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

/// A runtime failure with a one-line reason for the user (exit status 1).
struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The one-line reason of any error.
func oneLine(_ error: Error) -> String {
    String(describing: error).split(whereSeparator: \.isNewline).joined(separator: " ")
}

/// Writes results either for people (plain lines) or for scripts (one JSON object per line).
struct Output {
    let json: Bool

    /// Prints `fields` as a JSON object in JSON mode, else `text` (skipped when nil).
    func emit(_ text: String?, _ fields: [String: Any] = [:]) {
        if json {
            print(Self.encode(fields))
        } else if let text {
            print(text)
        }
    }

    /// A note for people on stderr; silent in JSON mode.
    func note(_ text: String) {
        guard !json else { return }
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func encode(_ fields: [String: Any]) -> String {
        guard JSONSerialization.isValidJSONObject(fields),
              let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes]),
              let text = String(data: data, encoding: .utf8) else { return "{}" }
        return text
    }
}

/// The profile passphrase: `SHROUD_PASSPHRASE`, else a prompt on the terminal without echo.
enum Passphrase {
    static func read(confirm: Bool) throws -> String {
        if let value = ProcessInfo.processInfo.environment["SHROUD_PASSPHRASE"] {
            guard !value.isEmpty else { throw Failure("SHROUD_PASSPHRASE is empty") }
            return value
        }
        guard let first = prompt("Passphrase: ") else {
            throw Failure("no passphrase: set SHROUD_PASSPHRASE or run on a terminal")
        }
        guard !first.isEmpty else { throw Failure("the passphrase must not be empty") }
        if confirm {
            guard let second = prompt("Repeat passphrase: "), second == first else {
                throw Failure("the passphrases do not match")
            }
        }
        return first
    }

    /// Reads a line from /dev/tty with echo off; nil when there is no terminal.
    private static func prompt(_ text: String) -> String? {
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        var saved = termios()
        let hasTerminal = tcgetattr(fd, &saved) == 0
        if hasTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(fd, TCSAFLUSH, &quiet)
        }
        defer {
            if hasTerminal { tcsetattr(fd, TCSAFLUSH, &saved) }
            _ = Glibc.write(fd, "\n", 1)
        }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }
}

/// Reads all of standard input as text.
func readStandardInput() -> String {
    String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
}

/// Questions to the person at the terminal (not to standard input, which scripts may fill).
enum Terminal {
    /// Prints `question` on /dev/tty and reads one line with echo; nil when the command does not
    /// run interactively (standard input is not a terminal, as under scripts and tests) or there
    /// is no terminal at all.
    static func ask(_ question: String) -> String? {
        guard isatty(STDIN_FILENO) == 1 else { return nil }
        let fd = open("/dev/tty", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        _ = question.withCString { Glibc.write(fd, $0, strlen($0)) }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while Glibc.read(fd, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return String(decoding: line, as: UTF8.self)
    }
}
