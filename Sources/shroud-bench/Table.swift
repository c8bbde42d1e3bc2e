@_exported import Foundation

/// A Markdown table printed to stdout, ready to paste into docs/PERFORMANCE.md.
struct Table {
    let columns: [String]
    private(set) var rows: [[String]] = []

    init(_ columns: String...) { self.columns = columns }

    mutating func add(_ cells: String...) { rows.append(cells) }

    func print(title: String) {
        Swift.print("\n### \(title)\n")
        Swift.print("| " + columns.joined(separator: " | ") + " |")
        Swift.print("|" + columns.map { _ in "---" }.joined(separator: "|") + "|")
        for row in rows { Swift.print("| " + row.joined(separator: " | ") + " |") }
    }
}

/// Monotonic seconds, for measuring.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func fmt(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }

enum BenchError: Error { case notBuilt(String), failed(String) }
