import ArgumentParser
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// Many WebSocket clients in one process: counts the `update` frames each receives and
/// the latency from the `commit_time` inside each frame to its arrival, and reports
/// them, with this process's own CPU, as one JSON line.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect many WebSocket clients and measure frames and latency.")

    @Option(help: "WebSocket URL.") var url = "ws://127.0.0.1:8080/ws"
    @Option(help: "Connections.") var clients = 1
    @Option(help: "Seconds to measure, after every client is connected.") var seconds = 10.0
    @Flag(help: "Send `ready for data` after `connected` (rowcast).") var subscribe = false

    func run() async throws {
        let shared = Shared()
        var logger = Logger(label: "load")
        logger.logLevel = .critical
        let subscribe = subscribe
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<clients {
                group.addTask { [url, logger] in
                    _ = try? await WebSocketClient.connect(
                        url: url, configuration: .init(maxFrameSize: 1 << 28), eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger
                    ) { inbound, outbound, _ in
                        var local = Stats.Local()
                        shared.connected.add(1, ordering: .relaxed)
                        if subscribe { try await outbound.write(.text(#"{"event":"ready for data","data":{}}"#)) }
                        for try await frame in inbound {
                            if shared.done.load(ordering: .relaxed) { break }
                            guard shared.measuring.load(ordering: .relaxed), frame.opcode == .text else { continue }
                            local.frames += 1
                            if let sent = commitTime(in: frame.data) {
                                local.latencies.append(nowMicros() - sent)
                            }
                        }
                        shared.stats.merge(local)
                        try await outbound.close(.normalClosure, reason: nil)
                    }
                }
            }
            // Wait for every connection (up to 60 s), settle, then measure.
            let deadline = ContinuousClock.now + .seconds(60)
            while shared.connected.load(ordering: .relaxed) < clients, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .seconds(1))
            let cpuBefore = processCPUSeconds()
            let start = ContinuousClock.now
            shared.measuring.store(true, ordering: .relaxed)
            try await Task.sleep(for: .seconds(seconds))
            shared.measuring.store(false, ordering: .relaxed)
            let elapsed = ContinuousClock.now - start
            let cpu = processCPUSeconds() - cpuBefore
            shared.done.store(true, ordering: .relaxed)
            // Each client leaves at its next frame; stop waiting for quiet ones.
            try await Task.sleep(for: .seconds(2))
            group.cancelAll()
            let result = shared.stats.summary(
                connected: shared.connected.load(ordering: .relaxed),
                elapsed: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                cpu: cpu
            )
            print(result)
        }
    }
}

/// What the client tasks share with the measuring task.
final class Shared: Sendable {
    let stats = Stats()
    let connected = Atomic<Int>(0)
    let measuring = Atomic<Bool>(false)
    let done = Atomic<Bool>(false)
}

final class Stats: Sendable {
    struct Local {
        var frames = 0
        var latencies: [Int64] = []
    }

    private let total = Mutex(Local())

    func merge(_ local: Local) {
        total.withLock { total in
            total.frames += local.frames
            total.latencies += local.latencies
        }
    }

    func summary(connected: Int, elapsed: Double, cpu: Double) -> String {
        total.withLock { total in
            let sorted = total.latencies.sorted()
            func percentile(_ p: Double) -> Double {
                guard !sorted.isEmpty else { return 0 }
                return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
            }
            return String(
                format: #"{"clients":%d,"frames":%d,"frames_per_s":%.0f,"p50_ms":%.2f,"p99_ms":%.2f,"max_ms":%.2f,"cpu_percent":%.0f}"#,
                connected, total.frames, Double(total.frames) / elapsed, percentile(0.5), percentile(0.99),
                Double(sorted.last ?? 0) / 1000, cpu / elapsed * 100
            )
        }
    }
}

func nowMicros() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1000
}

/// User plus system CPU seconds of this process.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// The Unix time in microseconds of the first `"commit_time":"YYYY-MM-DDTHH:MM:SS.ffffffZ"` in a frame.
func commitTime(in buffer: ByteBuffer) -> Int64? {
    buffer.withUnsafeReadableBytes { raw -> Int64? in
        let key = Array(#""commit_time":""#.utf8)
        let bytes = raw.bindMemory(to: UInt8.self)
        guard bytes.count > key.count + 27 else { return nil }
        var index = 0
        search: while index + key.count + 27 <= bytes.count {
            for offset in 0..<key.count where bytes[index + offset] != key[offset] {
                index += 1
                continue search
            }
            let start = index + key.count
            func number(_ from: Int, _ count: Int) -> Int64 {
                var value: Int64 = 0
                for position in from..<(from + count) { value = value * 10 + Int64(bytes[start + position] &- 48) }
                return value
            }
            let (year, month, day) = (number(0, 4), number(5, 2), number(8, 2))
            // days_from_civil (Howard Hinnant).
            let y = month <= 2 ? year - 1 : year
            let era = (y >= 0 ? y : y - 399) / 400
            let yoe = y - era * 400
            let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
            let days = era * 146_097 + doe - 719_468
            let seconds = days * 86_400 + number(11, 2) * 3600 + number(14, 2) * 60 + number(17, 2)
            return seconds * 1_000_000 + number(20, 6)
        }
        return nil
    }
}
