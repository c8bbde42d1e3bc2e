import Foundation
import ShroudTestSupport
import Testing
@testable import ShroudNet

/// A real AF_UNIX datagram socket stands in for systemd's notification socket.
@Suite struct SystemdNotifierTests {
    @Test func sendsReadyAndStoppingToAPathSocket() throws {
        let socket = try NotificationSocket(name: NSTemporaryDirectory() + "notify-\(UUID().uuidString.prefix(8))")
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.name])
        #expect(notifier.ready(status: "listening on 8443"))
        #expect(socket.receive()?.hasPrefix("READY=1\nSTATUS=listening on 8443\nMAINPID=") == true)
        #expect(notifier.stopping())
        #expect(socket.receive() == "STOPPING=1\n")
    }

    @Test func reachesAnAbstractSocket() throws {
        let socket = try NotificationSocket(name: "@shroud-notify-\(UUID().uuidString.prefix(8))")
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.name]).ready(status: "up"))
        #expect(socket.receive()?.hasPrefix("READY=1\n") == true)
    }

    @Test func withoutSystemdNothingHappens() {
        #expect(!SystemdNotifier(environment: [:]).ready(status: "x"))
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": ""]).stopping())
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": "relative/path"]).stopping())
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": "/" + String(repeating: "x", count: 200)]).stopping())
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent/socket"]).stopping())
    }
}
