import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Hostile clients in one process, for the perimeter section: they do one thing the
/// threat model bounds (Docs/threat-model.md), as fast as the server lets them, until
/// the process is stopped. Once they are all in place it says so on stderr, a JSON line
/// with `"event":"attacking"`; `rowcast-bench run` waits for it, then measures a steady
/// client beside them.
struct Attack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connect hostile clients and keep them at it until stopped.")

    enum Kind: String, ExpressibleByArgument, CaseIterable, Sendable {
        /// Subscribe to everything over `/ws` and read: what as many ordinary clients
        /// cost, beside which the others are read.
        case readers
        /// Subscribe to everything over `/ws` (with a 4 KB receive buffer), then never
        /// read again.
        case stall
        /// Engine.IO polling handshakes, one after another on each keep-alive connection,
        /// never joining the namespace.
        case handshakes
        /// `subscribe` with `last` 1000 and a 100-value `in` filter, again and again.
        case last
        /// An HTTP request head sent one byte a second, reconnecting when cut off.
        case slowloris
        /// WebSocket pings as fast as the socket takes them.
        case pings
    }

    @Option(help: "What the clients do: \(Kind.allCases.map(\.rawValue).joined(separator: ", ")).") var kind: Kind
    @Option(help: "Server address, host:port.") var server = "127.0.0.1:8080"
    @Option(help: "Connections.") var clients = 1

    func run() async throws {
        let parts = server.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--server must be host:port") }
        let host = String(parts[0])
        let group = MultiThreadedEventLoopGroup.singleton
        let ready = Tally()
        let kind = kind
        func connect() -> EventLoopFuture<any Channel> {
            ClientBootstrap(group: group)
                .channelOption(.socketOption(.so_rcvbuf), value: kind == .stall ? 4096 : 1 << 17)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(AttackHandler(kind: kind, host: host, port: port, ready: ready))
                    }
                }
                .connect(host: host, port: port)
        }
        for wave in stride(from: 0, to: clients, by: 100) {
            for future in (wave..<min(clients, wave + 100)).map({ _ in connect() }) { _ = try? await future.get() }
        }
        let deadline = ContinuousClock.now + .seconds(60)
        while ready.value.load(ordering: .relaxed) < clients, ContinuousClock.now < deadline {
            try await group.next().scheduleTask(in: .milliseconds(10)) {}.futureResult.get()
        }
        FileHandle.standardError.write(Data(#"{"event":"attacking","clients":\#(ready.value.load(ordering: .relaxed))}"#.utf8 + [10]))
        // Connections the server closes (slowloris heads at the idle timeout, stalled
        // readers cut off) come back, as an attacker's would, until stopped.
        while true {
            try await group.next().scheduleTask(in: .milliseconds(200)) {}.futureResult.get()
            let missing = clients - AttackHandler.open.load(ordering: .relaxed)
            for _ in 0..<max(0, min(missing, 100)) { _ = try? await connect().get() }
        }
    }
}

/// One hostile connection.
final class AttackHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// Connections open now.
    static let open = Atomic<Int>(0)

    private let kind: Attack.Kind
    private let host: String
    private let port: Int
    private let ready: Tally
    private var counted = false
    private var upgraded = false
    private var pending = ByteBuffer()
    private var context: ChannelHandlerContext?

    init(kind: Attack.Kind, host: String, port: Int, ready: Tally) {
        self.kind = kind
        self.host = host
        self.port = port
        self.ready = ready
    }

    private func markReady() {
        guard !counted else { return }
        counted = true
        ready.value.add(1, ordering: .relaxed)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        Self.open.add(1, ordering: .relaxed)
        switch kind {
        case .readers, .stall, .last, .pings:
            write("GET /ws HTTP/1.1\r\nHost: \(host):\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", context)
        case .handshakes:
            markReady()
            handshake(context)
        case .slowloris:
            markReady()
            write("GET /status HTTP/1.1\r\nHost: \(host):\(port)\r\n", context)
            trickle(context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        Self.open.subtract(1, ordering: .relaxed)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        pending.writeBuffer(&incoming)
        switch kind {
        case .handshakes:
            // One answer whole (head and Content-Length body), then the next request.
            while let end = pending.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: pending.readableBytesView[pending.readerIndex..<end.lowerBound], as: UTF8.self).lowercased()
                let length = head.split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
                let whole = end.upperBound - pending.readerIndex + length
                guard pending.readableBytes >= whole else { break }
                pending.moveReaderIndex(forwardBy: whole)
                handshake(context)
            }
            pending.discardReadBytes()
        case .readers, .stall, .last, .pings:
            if !upgraded {
                guard let end = pending.readableBytesView.firstRange(of: Array("\r\n\r\n".utf8)) else { return }
                pending.moveReaderIndex(to: end.upperBound)
                upgraded = true
                switch kind {
                case .readers, .stall: frame(#"{"event":"ready for data","data":{}}"#, context)
                case .last:
                    // Once every connection is open (upgrades go at the address's pace, and
                    // an address that owes scans gets its later ones refused): 3 s on.
                    context.eventLoop.scheduleTask(in: .seconds(3)) { [self] in
                        guard let context = self.context, context.channel.isActive else { return }
                        subscribeLast(context)
                    }
                default:
                    markReady()
                    pings(context)
                }
            }
            // Frames are skipped, not parsed: only the `subscribed` reply matters, or for
            // `last` a refusal, which it retries at once (the last few bytes stay, in case
            // it is split between two reads).
            let refused = kind == .last ? pending.readableBytesView.firstRange(of: Array(#""code":"too_many_scans""#.utf8)) : nil
            if let refused {
                pending.moveReaderIndex(to: refused.upperBound)
                pending.discardReadBytes()
                subscribeLast(context)
                return
            }
            guard let reply = pending.readableBytesView.firstRange(of: Array(#""event":"subscribed""#.utf8)) else {
                pending.moveReaderIndex(forwardBy: max(0, pending.readableBytes - 32))
                pending.discardReadBytes()
                return
            }
            pending.moveReaderIndex(to: reply.upperBound)
            pending.discardReadBytes()
            markReady()
            if kind == .stall {
                // Never read again: the kernel's buffers fill, then the server's.
                context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
            } else if kind == .last {
                subscribeLast(context)
            }
        case .slowloris:
            pending.clear()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func write(_ text: String, _ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
    }

    private func handshake(_ context: ChannelHandlerContext) {
        write("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: \(host):\(port)\r\n\r\n", context)
    }

    private func subscribeLast(_ context: ChannelHandlerContext) {
        let values = (1...100).map(String.init).joined(separator: ",")
        frame(#"{"event":"subscribe","data":{"last":1000,"filter":"id=in.(\#(values))"}}"#, context)
    }

    /// One header byte a second, for as long as the server keeps the connection.
    private func trickle(_ context: ChannelHandlerContext) {
        context.eventLoop.scheduleTask(in: .seconds(1)) { [self] in
            guard let context = self.context, context.channel.isActive else { return }
            write("X", context)
            trickle(context)
        }
    }

    /// Pings while the socket takes them; the next batch once the last was written.
    private func pings(_ context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var batch = ByteBuffer()
        for _ in 0..<64 { batch.writeBytes(Self.masked(opcode: 9, Array("ping".utf8))) }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(batch), promise: written)
        written.futureResult.whenSuccess { [self] in
            if let context = self.context { pings(context) }
        }
    }

    private func frame(_ text: String, _ context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: Self.masked(opcode: 1, Array(text.utf8)))), promise: nil)
    }

    /// A client frame, masked with a zero key (the payload stays as it is).
    static func masked(opcode: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var frame: [UInt8] = [0x80 | opcode]
        if payload.count < 126 {
            frame.append(0x80 | UInt8(payload.count))
        } else {
            frame.append(0x80 | 126)
            frame += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        return frame + [0, 0, 0, 0] + payload
    }
}

/// A count shared by the attack's connections.
final class Tally: Sendable {
    let value = Atomic<Int>(0)
}
