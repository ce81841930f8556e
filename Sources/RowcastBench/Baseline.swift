import ArgumentParser
import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import RowcastCore
import Synchronization

/// The fastest this stack broadcasts: a bare Hummingbird + hummingbird-websocket server
/// that encodes one frame per tick and writes those bytes to every client. No capture,
/// no subscriptions: the floor that `rowcast serve` is measured against.
struct Baseline: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve a pre-encoded frame to every WebSocket client at a fixed rate.")

    @Option(help: "Port to listen on.") var port = 8090
    @Option(help: "Frames per second.") var rate = 100.0
    @Option(help: "Bytes of filler per frame, to match a record's size.") var size = 40

    func run() async throws {
        let clients = Clients()
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.ws("/ws") { inbound, outbound, _ in
            let (stream, continuation) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingOldest(4096))
            let id = clients.add(continuation)
            defer { clients.remove(id) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await frame in stream {
                        try await outbound.write(.custom(.init(fin: true, opcode: .text, data: frame)))
                    }
                }
                group.addTask { for try await _ in inbound {} }
                try await group.next()
                group.cancelAll()
            }
        }
        var logger = Logger(label: "baseline")
        logger.logLevel = .warning
        let app = Application(
            router: router,
            server: .http1WebSocketUpgrade(webSocketRouter: router),
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            logger: logger
        )
        let filler = String(repeating: "x", count: size)
        let ticker = Task {
            let clock = ContinuousClock()
            let interval = Duration.seconds(1 / rate)
            var next = clock.now
            var id = 0
            while !Task.isCancelled {
                next += interval
                try await clock.sleep(until: next)
                id += 1
                // Shaped like an update frame, with the send time where a record has commit_time.
                let micros = Int64(Date().timeIntervalSince1970 * 1_000_000) - postgresEpochOffsetMicroseconds
                var writer = JSONWriter(capacity: 160 + size)
                writer.appendASCII(#"{"event":"update","data":{"op":"insert","commit_time":"#)
                writer.appendString(CommitTime.rfc3339(postgresMicroseconds: micros))
                writer.appendASCII(#","row":{"id":"#)
                writer.appendInteger(id)
                writer.appendASCII(#","title":"#)
                writer.appendString(filler)
                writer.appendASCII("}}}")
                clients.broadcast(ByteBuffer(bytes: writer.bytes))
            }
        }
        defer { ticker.cancel() }
        print("baseline listening on \(port)")
        try await app.runService()
    }
}

final class Clients: Sendable {
    private let state = Mutex<(next: Int, all: [Int: AsyncStream<ByteBuffer>.Continuation])>((0, [:]))

    func add(_ continuation: AsyncStream<ByteBuffer>.Continuation) -> Int {
        state.withLock { state in
            state.next += 1
            state.all[state.next] = continuation
            return state.next
        }
    }

    func remove(_ id: Int) {
        state.withLock { _ = $0.all.removeValue(forKey: id)?.finish() }
    }

    func broadcast(_ frame: ByteBuffer) {
        state.withLock { state in
            for continuation in state.all.values { continuation.yield(frame) }
        }
    }
}
