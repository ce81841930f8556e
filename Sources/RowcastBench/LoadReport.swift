import Foundation

/// What `rowcast-bench load` reports: on stderr when it starts measuring (`event`
/// "measuring", the counts and times only), on stdout when it is done (everything).
struct LoadReport: Codable, Sendable {
    var event: String?
    var clients = 0
    var subscribed = 0
    var allConnectedS = 0.0
    var allSubscribedS = 0.0
    var frames = 0
    var framesPerS = 0.0
    var p50Ms = 0.0
    var p99Ms = 0.0
    var maxMs = 0.0
    var cpuPercent = 0.0

    static var decoder: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }

    static var encoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = .sortedKeys
        return encoder
    }

    /// The "measuring" event among a load's stderr lines.
    static func measuring(in text: String) -> LoadReport? {
        text.split(whereSeparator: \.isNewline).lazy
            .compactMap { try? decoder.decode(LoadReport.self, from: Data($0.utf8)) }
            .first { $0.event == "measuring" }
    }

    var json: String { (try? Self.encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}" }
}
