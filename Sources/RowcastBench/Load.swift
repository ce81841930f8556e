import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Many WebSocket clients in one process: counts the `update` frames each receives and
/// the latency from the `commit_time` inside each frame to its arrival, and reports
/// them, with this process's own CPU, as one JSON line. When every client is connected
/// (and subscribed) and the measurement begins, it says so on stderr, a JSON line with
/// `"event":"measuring"`, for whoever waits on it (`rowcast-bench run`).
///
/// The clients are plain NIO channel handlers that parse frames where they arrive, on
/// the event loop: on a 2-core machine the load client shares the CPU with the server
/// it measures, so it must cost far less per frame than the server does.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect many WebSocket clients and measure frames and latency.")

    @Option(help: "WebSocket URL.") var url = "ws://127.0.0.1:8080/ws"
    @Option(help: "Connections.") var clients = 1
    @Option(help: "Seconds to measure, after every client is connected.") var seconds = 10.0
    @Flag(help: "Send `ready for data` after `connected` (rowcast).") var subscribe = false
    @Flag(help: "Speak Socket.IO over WebSocket (the URL's path is /socket.io/?EIO=4&transport=websocket).") var socketio = false
    @Option(help: "End the measurement early once the clients have received this many update frames in all.") var untilFrames: Int?
    @Option(help: "The local address to connect from (another than an attack's, whose per-address limits it then shares nothing of).") var from: String?
    @Option(help: "A file of credentials, one a line: client N presents line N (modulo their number) as ?token=.") var tokens: String?

    func run() async throws {
        guard let target = LoadTarget(url) else { throw ValidationError("--url must look like ws://host:port/path") }
        let credentials = try tokens.map { try String(contentsOfFile: $0, encoding: .utf8).split(whereSeparator: \.isNewline).map(String.init) } ?? []
        func address(of client: Int) -> LoadTarget {
            guard !credentials.isEmpty else { return target }
            var own = target
            own.path += (own.path.contains("?") ? "&" : "?") + "token=" + credentials[client % credentials.count]
            return own
        }
        let shared = Shared(untilFrames: untilFrames)
        let group = MultiThreadedEventLoopGroup.singleton
        // Waits sleep on an event loop's timer, not on Dispatch's (see Docs/development.md).
        func pause(_ duration: TimeAmount) async throws {
            try await group.next().scheduleTask(in: duration) {}.futureResult.get()
        }
        let source = try from.map { try SocketAddress(ipAddress: $0, port: 0) }
        let began = ContinuousClock.now
        var channels: [any Channel] = []
        // Connect in waves, as browsers arriving would, without a SYN flood.
        for wave in stride(from: 0, to: clients, by: 100) {
            let connecting = (wave..<min(clients, wave + 100)).map { client in
                let own = address(of: client)
                var bootstrap = ClientBootstrap(group: group)
                if let source { bootstrap = bootstrap.bind(to: source) }
                return bootstrap
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                LoadClientHandler(target: own, subscribe: subscribe, socketIO: socketio, shared: shared))
                        }
                    }
                    .connect(host: target.host, port: target.port)
            }
            for future in connecting {
                if let channel = try? await future.get() { channels.append(channel) }
            }
        }
        // Wait for every upgrade (and `subscribed`, when subscribing) up to 60 s, settle,
        // then measure.
        let deadline = ContinuousClock.now + .seconds(60)
        while shared.connected.load(ordering: .relaxed) < clients, ContinuousClock.now < deadline {
            try await pause(.milliseconds(5))
        }
        let allConnected = ContinuousClock.now - began
        while subscribe, shared.subscribed.load(ordering: .relaxed) < clients, ContinuousClock.now < deadline {
            try await pause(.milliseconds(5))
        }
        let allSubscribed = ContinuousClock.now - began
        func inSeconds(_ duration: Duration) -> Double {
            Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }
        // Settle (the last answers written, the clients idle), then measure.
        try await pause(.seconds(1))
        let cpuBefore = processCPUSeconds()
        let start = ContinuousClock.now
        shared.measuring.store(true, ordering: .relaxed)
        // Whoever drives the load (rowcast-bench run) waits for this line.
        let measuring = LoadReport(
            event: "measuring", clients: shared.connected.load(ordering: .relaxed), subscribed: shared.subscribed.load(ordering: .relaxed),
            allConnectedS: inSeconds(allConnected), allSubscribedS: subscribe ? inSeconds(allSubscribed) : 0
        )
        FileHandle.standardError.write(Data((measuring.json + "\n").utf8))
        let end = start + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < end, !shared.enough {
            try await pause(.milliseconds(min(100, max(1, Int64((end - ContinuousClock.now) / .milliseconds(1))))))
        }
        shared.measuring.store(false, ordering: .relaxed)
        let elapsed = ContinuousClock.now - start
        let cpu = processCPUSeconds() - cpuBefore
        shared.done.store(true, ordering: .relaxed)
        for channel in channels { try? await channel.close() }
        let result = shared.stats.summary(
            connected: shared.connected.load(ordering: .relaxed),
            subscribed: shared.subscribed.load(ordering: .relaxed),
            connectedSeconds: inSeconds(allConnected),
            subscribedSeconds: subscribe ? inSeconds(allSubscribed) : 0,
            elapsed: inSeconds(elapsed),
            cpu: cpu
        )
        print(result.json)
    }
}

/// Where the clients connect: `ws://host:port/path`.
struct LoadTarget: Sendable {
    let host: String
    let port: Int
    var path: String

    init?(_ url: String) {
        guard url.hasPrefix("ws://") else { return nil }
        let rest = url.dropFirst(5)
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = rest[..<slash]
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]) else { return nil }
        host = String(authority[..<colon])
        self.port = port
        path = slash == rest.endIndex ? "/" : String(rest[slash...])
    }
}

/// One client: the HTTP upgrade by hand, then server frames parsed in place.
final class LoadClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let target: LoadTarget
    private let subscribe: Bool
    private let socketIO: Bool
    private let shared: Shared
    private var upgraded = false
    private var subscribed = false
    private var pending = ByteBuffer()
    private var local = Stats.Local()

    init(target: LoadTarget, subscribe: Bool, socketIO: Bool, shared: Shared) {
        self.target = target
        self.subscribe = subscribe
        self.socketIO = socketIO
        self.shared = shared
    }

    func channelActive(context: ChannelHandlerContext) {
        let request = "GET \(target.path) HTTP/1.1\r\nHost: \(target.host):\(target.port)\r\nUpgrade: websocket\r\n"
            + "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: request)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        if !upgraded {
            guard let end = pending.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
            let head = pending.readString(length: end.upperBound - pending.readerIndex) ?? ""
            guard head.hasPrefix("HTTP/1.1 101") else {
                context.close(promise: nil)
                return
            }
            upgraded = true
            shared.connected.add(1, ordering: .relaxed)
            if subscribe, !socketIO { send(opcode: 1, payload: Array(#"{"event":"ready for data","data":{}}"#.utf8), context: context) }
        }
        while let (opcode, payload) = nextFrame() {
            switch opcode {
            case 1 where socketIO:
                socketIOPacket(payload, context: context)
            case 1:
                if !subscribed, payload.readableBytesView.firstRange(of: Array(#""event":"subscribed""#.utf8)) != nil {
                    subscribed = true
                    shared.subscribed.add(1, ordering: .relaxed)
                }
                guard shared.measuring.load(ordering: .relaxed) else { continue }
                local.frames += 1
                if shared.untilFrames != nil, payload.readableBytesView.starts(with: Array(#"{"event":"update""#.utf8)) {
                    shared.updates.add(1, ordering: .relaxed)
                }
                if let sent = commitTime(in: payload) { local.latencies.append(nowMicros() - sent) }
            case 8:
                context.close(promise: nil)
            case 9:
                send(opcode: 10, payload: Array(payload.readableBytesView), context: context)
            default:
                break
            }
        }
        if pending.readerIndex > 1 << 16 { pending.discardReadBytes() }
    }

    /// Engine.IO's open packet gets the namespace's CONNECT, its answer `ready for
    /// data`; pings get pongs; only `update` events count.
    private func socketIOPacket(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        let view = payload.readableBytesView
        guard let type = view.first else { return }
        switch type {
        case UInt8(ascii: "0"):
            send(opcode: 1, payload: Array("40".utf8), context: context)
        case UInt8(ascii: "2"):
            send(opcode: 1, payload: Array("3".utf8), context: context)
        case UInt8(ascii: "4"):
            if view.starts(with: Array(#"42["update""#.utf8)) {
                guard shared.measuring.load(ordering: .relaxed) else { return }
                local.frames += 1
                if shared.untilFrames != nil { shared.updates.add(1, ordering: .relaxed) }
                if let sent = commitTime(in: payload) { local.latencies.append(nowMicros() - sent) }
            } else if view.starts(with: Array("40{".utf8)) {
                if subscribe { send(opcode: 1, payload: Array(#"42["ready for data",{}]"#.utf8), context: context) }
            } else if !subscribed, view.starts(with: Array(#"42["subscribed""#.utf8)) {
                subscribed = true
                shared.subscribed.add(1, ordering: .relaxed)
            }
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.stats.merge(local)
        local = Stats.Local()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// The next whole frame in `pending` (server frames are never masked).
    private func nextFrame() -> (opcode: UInt8, payload: ByteBuffer)? {
        let start = pending.readerIndex
        guard let first = pending.getInteger(at: start, as: UInt8.self),
            let second = pending.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        var header = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let extended = pending.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(extended)
            header = 4
        } else if length == 127 {
            guard let extended = pending.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            length = Int(extended)
            header = 10
        }
        guard pending.readableBytes >= header + length, let payload = pending.getSlice(at: start + header, length: length) else { return nil }
        pending.moveReaderIndex(forwardBy: header + length)
        return (first & 0x0F, payload)
    }

    /// A client frame: masked, with a zero key (which leaves the payload as it is).
    private func send(opcode: UInt8, payload: [UInt8], context: ChannelHandlerContext) {
        var frame = ByteBuffer()
        frame.writeInteger(0x80 | opcode)
        if payload.count < 126 {
            frame.writeInteger(0x80 | UInt8(payload.count))
        } else {
            frame.writeInteger(UInt8(0x80 | 126))
            frame.writeInteger(UInt16(payload.count))
        }
        frame.writeInteger(UInt32(0))
        frame.writeBytes(payload)
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }
}

/// What the client tasks share with the measuring task.
final class Shared: Sendable {
    let stats = Stats()
    let connected = Atomic<Int>(0)
    let subscribed = Atomic<Int>(0)
    let measuring = Atomic<Bool>(false)
    let done = Atomic<Bool>(false)
    /// `--until-frames`, and the update frames counted towards it (only then: one
    /// shared atomic per frame would cost the clients more than they measure).
    let untilFrames: Int?
    let updates = Atomic<Int>(0)

    init(untilFrames: Int?) { self.untilFrames = untilFrames }

    /// Whether the clients have received the update frames asked for.
    var enough: Bool { untilFrames.map { updates.load(ordering: .relaxed) >= $0 } ?? false }
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

    func summary(connected: Int, subscribed: Int, connectedSeconds: Double, subscribedSeconds: Double, elapsed: Double, cpu: Double) -> LoadReport {
        total.withLock { total in
            let sorted = total.latencies.sorted()
            func percentile(_ p: Double) -> Double {
                guard !sorted.isEmpty else { return 0 }
                return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
            }
            return LoadReport(
                clients: connected, subscribed: subscribed, allConnectedS: connectedSeconds, allSubscribedS: subscribedSeconds, frames: total.frames,
                framesPerS: Double(total.frames) / elapsed, p50Ms: percentile(0.5), p99Ms: percentile(0.99), maxMs: Double(sorted.last ?? 0) / 1000,
                cpuPercent: cpu / elapsed * 100
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
