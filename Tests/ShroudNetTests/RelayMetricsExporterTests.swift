import Testing
import ShroudRelayCore
@testable import ShroudNet

/// `/metrics` through swift-metrics and swift-prometheus: every statistics figure under its
/// stable name and type, counters that follow the core's totals.
@Suite struct RelayMetricsExporterTests {
    @Test func everyFigureIsExportedUnderItsNameAndType() {
        let exporter = RelayMetricsExporter()
        var statistics = RelayStatistics()
        statistics.connections = 3
        statistics.directMessagesAccepted = 7
        let text = exporter.render(statistics)
        // Counters are integers; swift-prometheus writes gauges as floating point ("3.0").
        for (name, _, kind, value) in statistics.figures {
            let sample = "shroud_relay_\(name) \(kind == "gauge" ? "\(Double(value))" : "\(value)")\n"
            #expect(text.contains("# TYPE shroud_relay_\(name) \(kind)\n" + sample), "\(name): \(text)")
        }
        #expect(text.contains("shroud_relay_connections 3.0\n"))
        #expect(text.contains("shroud_relay_direct_messages_accepted_total 7\n"))
    }

    @Test func countersFollowTheTotalsAndGaugesTheCurrentValue() {
        let exporter = RelayMetricsExporter()
        var statistics = RelayStatistics()
        statistics.deliveriesSent = 5
        statistics.connections = 10
        _ = exporter.render(statistics)
        statistics.deliveriesSent = 12
        statistics.connections = 4
        let text = exporter.render(statistics)
        #expect(text.contains("shroud_relay_deliveries_sent_total 12\n"), "\(text)")
        #expect(text.contains("shroud_relay_connections 4.0\n"), "\(text)")
        // Two exporters (two relays in one process) never share figures.
        #expect(RelayMetricsExporter().render(RelayStatistics()).contains("shroud_relay_deliveries_sent_total 0\n"))
    }
}
