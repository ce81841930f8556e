import Logging
import NIOCore
import Synchronization

/// Where a connection comes from, as the limits count it: an IPv4 address, an IPv6
/// /64 (one host is handed a whole /64, so counting single IPv6 addresses would let
/// it open 2^64 of them), an IPv4-mapped IPv6 address as its IPv4 address.
struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    let description: String

    init(_ address: SocketAddress?) {
        guard let address else {
            description = "unknown"
            return
        }
        switch address {
        case .v4:
            description = address.ipAddress ?? "unknown"
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
                description = bytes[12..<16].map(String.init).joined(separator: ".")
            } else if bytes.count == 16 {
                let groups = stride(from: 0, to: 8, by: 2).map { String(UInt16(bytes[$0]) << 8 | UInt16(bytes[$0 + 1]), radix: 16) }
                description = groups.joined(separator: ":") + "::/64"
            } else {
                description = address.ipAddress ?? "unknown"
            }
        case .unixDomainSocket:
            description = "local"
        }
    }
}

/// How many connections `serve` holds, in all and from one ``ClientAddress``
/// (`--max-connections`, `--max-connections-per-address`). A connection past either is
/// answered `503` with the reason and closed before anything of it is read, so one
/// host cannot take every descriptor, and past the total no one exhausts them.
/// A limit of 0 means none.
final class ConnectionLimits: Sendable {
    let total: Int
    let perAddress: Int
    private let logger: Logger
    private let metrics: ServerMetrics?

    private struct Counts {
        var open = 0
        var byAddress: [ClientAddress: Int] = [:]
        /// Refused connections still being told why.
        var refusing = 0
    }

    private let counts = Mutex(Counts())

    /// Refused connections told why at once; past them a refused connection is closed
    /// without an answer, so refusals cannot hold descriptors of their own.
    static let maxRefusing = 256

    init(total: Int, perAddress: Int, metrics: ServerMetrics?, logger: Logger) {
        self.total = total
        self.perAddress = perAddress
        self.metrics = metrics
        self.logger = logger
    }

    /// Connections open now (refused ones not counted).
    var open: Int { counts.withLock { $0.open } }

    /// What becomes of a new connection.
    enum Admission {
        case admitted
        /// Answered 503 with this reason, then closed.
        case refused(String)
        /// Closed at once: too many refusals are being answered already.
        case dropped
    }

    /// Counts a new connection in, or says why it is refused; every connection counted
    /// is counted out when it closes.
    func admit(_ channel: any Channel) -> Admission {
        let address = ClientAddress(channel.remoteAddress)
        let admission = counts.withLock { counts -> Admission in
            var refusal: String?
            let fromAddress = counts.byAddress[address, default: 0]
            if total > 0, counts.open >= total {
                refusal = "rowcast holds its most connections (\(total), --max-connections); retry later"
            } else if perAddress > 0, fromAddress >= perAddress {
                refusal = "too many connections from \(address) (\(perAddress), --max-connections-per-address); close some, or retry later"
            }
            guard let refusal else {
                counts.open += 1
                counts.byAddress[address] = fromAddress + 1
                return .admitted
            }
            guard counts.refusing < Self.maxRefusing else { return .dropped }
            counts.refusing += 1
            return .refused(refusal)
        }
        switch admission {
        case .admitted:
            channel.closeFuture.whenComplete { [self] _ in
                counts.withLock { counts in
                    counts.open -= 1
                    let left = counts.byAddress[address, default: 1] - 1
                    counts.byAddress[address] = left > 0 ? left : nil
                }
            }
        case .refused(let reason):
            metrics?.connectionsRefused.increment()
            logger.debug("refused a connection from \(address): \(reason)")
            channel.closeFuture.whenComplete { [self] _ in counts.withLock { $0.refusing -= 1 } }
        case .dropped:
            metrics?.connectionsRefused.increment()
        }
        return admission
    }
}

/// The first handler of a refused connection: answers `503` with the reason (when
/// there is one; otherwise it closes at once) and lets nothing the client sends reach
/// the HTTP layer. After the answer it shuts its side down and drops what the client
/// sends until the client closes, for a second at most: closing at once with the
/// client's request unread would reset the connection, and the client might never read why.
final class RefuseConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let reason: String?

    init(reason: String?) { self.reason = reason }

    func handlerAdded(context: ChannelHandlerContext) {
        guard let reason else {
            context.close(promise: nil)
            return
        }
        let body = reason + "\n"
        let response = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: \(body.utf8.count)\r\nretry-after: 5\r\nconnection: close\r\n\r\n" + body
        context.writeAndFlush(NIOAny(ByteBuffer(string: response)), promise: nil)
        context.close(mode: .output, promise: nil)
        let channel = context.channel
        context.eventLoop.scheduleTask(in: .seconds(1)) { channel.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}
