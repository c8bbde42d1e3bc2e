import Foundation
import CoreMetrics
import Prometheus
import ShroudRelayCore

/// `GET /metrics` through swift-metrics with swift-prometheus as its backend. Each figure of
/// `RelayStatistics.figures` becomes a swift-metrics `Counter` or `Gauge` named
/// `shroud_relay_<name>`, created the first time it is seen, so a figure added to the statistics
/// appears here without further code. The relay core keeps the totals; at each scrape counters
/// are advanced by what was added since the last one and gauges set to their current value, then
/// the registry writes the Prometheus text format.
///
/// Uses its own registry and factory, not the process-wide `MetricsSystem`, so that several
/// relays (in tests) never share figures.
public final class RelayMetricsExporter: @unchecked Sendable {
    /// Prefix of every metric name.
    public static let prefix = "shroud_relay_"

    private let lock = NSLock()
    private let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    // Guarded by `lock`.
    private var counters: [String: (counter: CoreMetrics.Counter, exported: Int)] = [:]
    private var gauges: [String: CoreMetrics.Gauge] = [:]

    public init() {
        factory = PrometheusMetricsFactory(registry: registry)
    }

    /// The Prometheus text exposition (format 0.0.4) for this snapshot.
    public func render(_ statistics: RelayStatistics) -> String {
        lock.withLock {
            for (name, _, kind, value) in statistics.figures {
                let label = Self.prefix + name
                if kind == "counter" {
                    let entry = counters[label] ?? (CoreMetrics.Counter(label: label, factory: factory), 0)
                    // Totals never go down while the process runs; a smaller value is ignored.
                    if value > entry.exported { entry.counter.increment(by: value - entry.exported) }
                    counters[label] = (entry.counter, max(entry.exported, value))
                } else {
                    let gauge = gauges[label] ?? CoreMetrics.Gauge(label: label, factory: factory)
                    gauge.record(value)
                    gauges[label] = gauge
                }
            }
            var buffer: [UInt8] = []
            registry.emit(into: &buffer)
            return String(decoding: buffer, as: UTF8.self)
        }
    }
}
