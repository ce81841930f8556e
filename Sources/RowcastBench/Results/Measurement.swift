import Foundation
import RowcastCore

/// One figure a run measured, as one JSON line:
///
///     {"section":"drain","name":"seconds","labels":{"rows":"1000000","table":"seed","tool":"rowcast tail"},
///      "runs":3,"median":4.98,"unit":"s","values":[4.95,4.98,5.02]}
///
/// `name` is the quantity, `labels` say what it was measured on (the row of its table in
/// Docs/benchmarks.md), `values` are the raw figures of every run and `median` their
/// median. Figures derived from others (rows/s, × floor, KB per client) are not
/// measurements: `report` computes them.
struct Measurement: Codable, Sendable, Equatable {
    let section: String
    let name: String
    let labels: [String: String]
    let runs: Int
    let median: Double
    let unit: String
    let values: [Double]

    init(section: String, name: String, labels: [String: String], unit: String, values: [Double]) {
        self.section = section
        self.name = name
        self.labels = labels
        self.unit = unit
        self.values = values
        runs = values.count
        median = Statistics.median(values)
    }

    /// The largest of the values (peak RSS across runs).
    var maximum: Double { values.max() ?? 0 }

    /// The JSON line, keys in the order above.
    var jsonLine: String {
        var writer = JSONWriter(capacity: 256)
        var first = true
        writer.append(byte: UInt8(ascii: "{"))
        writer.appendKey("section", first: &first)
        writer.appendString(section)
        writer.appendKey("name", first: &first)
        writer.appendString(name)
        writer.appendKey("labels", first: &first)
        writer.append(byte: UInt8(ascii: "{"))
        var firstLabel = true
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            if !firstLabel { writer.append(byte: UInt8(ascii: ",")) }
            firstLabel = false
            writer.appendString(key)
            writer.append(byte: UInt8(ascii: ":"))
            writer.appendString(value)
        }
        writer.append(byte: UInt8(ascii: "}"))
        writer.appendKey("runs", first: &first)
        writer.appendInteger(runs)
        writer.appendKey("median", first: &first)
        writer.appendRaw(Array(Self.number(median).utf8))
        writer.appendKey("unit", first: &first)
        writer.appendString(unit)
        writer.appendKey("values", first: &first)
        writer.append(byte: UInt8(ascii: "["))
        writer.appendRaw(Array(values.map(Self.number).joined(separator: ",").utf8))
        writer.append(byte: UInt8(ascii: "]"))
        writer.append(byte: UInt8(ascii: "}"))
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// A JSON number: integers without a fraction, others to six decimals at most.
    static func number(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        var text = String(format: "%.6f", value)
        while text.hasSuffix("0") { text.removeLast() }
        // 999.9999999 prints as 1000.000000: no bare point, which is not JSON.
        if text.hasSuffix(".") { text.removeLast() }
        return text
    }
}

/// The first line of a results file: when, on what, and with which knobs.
struct RunInfo: Codable, Sendable {
    let date: String
    let postgres: String
    let cores: Int
    let processor: String
    let memoryGiB: Int
    let kernel: String
    let rows: Int
    let runs: Int
    let seconds: Double
    let idleClients: Int
    let sections: [Int]
}

/// A results file, JSON lines: `{"run":{…}}` first, then one measurement per line.
struct Results: Sendable {
    var info: RunInfo?
    var measurements: [Measurement] = []

    /// The measurements of `section` whose labels include `labels`, named `name`.
    func find(_ section: String, _ name: String, _ labels: [String: String] = [:]) -> [Measurement] {
        measurements.filter { measurement in
            measurement.section == section && measurement.name == name && labels.allSatisfy { measurement.labels[$0.key] == $0.value }
        }
    }

    /// The one such measurement; a report cannot be written without it.
    func one(_ section: String, _ name: String, _ labels: [String: String] = [:]) throws -> Measurement {
        guard let found = find(section, name, labels).first else {
            throw BenchFailure("the results have no \(section) \(name) for \(labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
        }
        return found
    }

    /// The values a label takes in a section, in the order they first appear.
    func labelValues(_ section: String, _ label: String) -> [String] {
        var seen: [String] = []
        for measurement in measurements where measurement.section == section {
            if let value = measurement.labels[label], !seen.contains(value) { seen.append(value) }
        }
        return seen
    }

    static func read(_ path: String) throws -> Results {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw BenchFailure("cannot read \(path)") }
        var results = Results()
        struct Header: Codable { let run: RunInfo }
        for (number, line) in text.split(whereSeparator: \.isNewline).enumerated() {
            let data = Data(line.utf8)
            if let header = try? JSONDecoder().decode(Header.self, from: data) {
                results.info = header.run
            } else if let measurement = try? JSONDecoder().decode(Measurement.self, from: data) {
                results.measurements.append(measurement)
            } else {
                throw BenchFailure("\(path):\(number + 1) is neither a run header nor a measurement")
            }
        }
        return results
    }
}

/// Appends results as they are measured, one JSON line each, so that a run that fails
/// later keeps what it had; also prints a short line per measurement on stderr.
final class ResultsLog: @unchecked Sendable {
    private let handle: FileHandle

    /// `path` nil: standard output.
    init(path: String?, info: RunInfo) throws {
        if let path {
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                throw BenchFailure("cannot write \(path)")
            }
            self.handle = handle
        } else {
            handle = .standardOutput
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let header = String(decoding: try encoder.encode(["run": info]), as: UTF8.self)
        write(header)
    }

    func record(_ measurement: Measurement) {
        write(measurement.jsonLine)
        let labels = measurement.labels.sorted { $0.key < $1.key }.map(\.value).joined(separator: ", ")
        let values = measurement.values.count > 1 ? " (" + measurement.values.map { Measurement.number($0) }.joined(separator: " ") + ")" : ""
        progress("\(measurement.section)\(labels.isEmpty ? "" : " " + labels): \(measurement.name) \(Measurement.number(measurement.median)) \(measurement.unit)\(values)")
    }

    private func write(_ line: String) {
        handle.write(Data((line + "\n").utf8))
    }
}

/// A line on stderr for whoever watches the run, with the minutes and seconds since
/// the process started.
func progress(_ line: String) {
    let elapsed = (ContinuousClock.now - processStart).components.seconds
    let stamp = "\(elapsed / 60):" + (elapsed % 60 < 10 ? "0" : "") + "\(elapsed % 60)"
    FileHandle.standardError.write(Data("bench: [\(stamp)] \(line)\n".utf8))
}

private let processStart = ContinuousClock.now

/// The statistics of a measurement's runs.
enum Statistics {
    /// The middle value, or the mean of the two middle ones; 0 for no values.
    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return 0 }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}
