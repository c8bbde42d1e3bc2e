import Foundation
import Testing

/// The exit-status contract of DESIGN.md §5 for help and usage errors.
@Suite struct CommandLineEndToEndTests {
    let shroud = Binaries.path("shroud")

    @Test func helpIsSuccessAndUsageErrorsAreTwo() throws {
        for arguments in [["--help"], ["help", "id"], ["id", "--help"], ["media", "record-screen", "--help"], ["--version"]] {
            let result = try run(shroud, arguments)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            #expect(!result.stdout.isEmpty, "\(arguments) prints to stdout")
        }
        for arguments in [["bogus"], ["id", "new", "--no-such-option"], ["contact", "add"], ["--home"]] {
            let result = try run(shroud, arguments)
            #expect(result.status == 2, "\(arguments): \(result.stderr)")
            #expect(!result.stderr.isEmpty)
        }
    }
}
