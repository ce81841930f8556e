import Foundation
import RowcastTestSupport
import Testing

/// Three `rowcast serve` nodes, each with its own slot, behind HAProxy: when one is
/// killed, its clients reconnect through HAProxy to another node and resume from
/// their last cursor, so every client gets every row exactly once, in order.
@Suite(
    .enabled(if: LiveDatabase.available, "needs the cluster that make test starts"),
    .timeLimit(.minutes(5))
)
struct SeveralNodesTests {
    /// make test installs it, as it installs chromium.
    static var haproxy: String? { ["/usr/sbin/haproxy", "/usr/bin/haproxy"].first { FileManager.default.isExecutableFile(atPath: $0) } }

    /// A free TCP port on 127.0.0.1 (released before HAProxy binds it).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw Failure("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func threeNodesBehindHAProxyAndOneKilledEveryClientGetsEveryRowOnce() async throws {
        let url = try await LiveDatabase.freshDatabase(prefix: "cli")
        try await LiveDatabase.psql(url, "CREATE TABLE orders (id int PRIMARY KEY)")
        let suffix = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let slots = (1...3).map { "node\($0)_\(suffix)" }
        for slot in slots {
            let setup = try await Rowcast.run(["setup", "--mode", "replication", "--table", "orders", "--slot", slot, "--publication", "orders", "--db", url])
            #expect(setup.status == 0, "\(setup.stderr)")
        }
        defer {
            for slot in slots { _ = try? LiveDatabase.psqlBlocking(url, "SELECT pg_drop_replication_slot('\(slot)')", seconds: 30) }
        }
        var nodes: [(process: RunningProcess, port: String)] = []
        for slot in slots { nodes.append(try await ResumeAcrossRestartTests.serve(slot: slot, url: url)) }

        // HAProxy in front: health checks on /healthz every 200 ms, and a connection
        // refused by a dead node is sent to another one.
        let front = try Self.freePort()
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("rowcast-haproxy-\(suffix).cfg")
        // The configuration `make nodes` uses (scripts/haproxy-nodes.cfg).
        let template = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../scripts/haproxy-nodes.cfg").standardized,
            encoding: .utf8
        )
        let servers = nodes.enumerated().map { "    server node\($0.offset + 1) 127.0.0.1:\($0.element.port) check inter 200 fall 1 rise 2" }
        try template.replacingOccurrences(of: "FRONT_PORT", with: String(front))
            .replacingOccurrences(of: "\nSERVERS\n", with: "\n" + servers.joined(separator: "\n") + "\n")
            .write(to: config, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: config) }
        let proxy = try RunningProcess(try #require(Self.haproxy, "haproxy is not installed (make test installs it)"), ["-db", "-f", config.path])
        // Ready once it answers for the nodes.
        let deadline = Date().addingTimeInterval(60)
        var health: String?
        while health != "200", Date() < deadline {
            try await pause(for: .milliseconds(100))
            health = try? await onThread("GET /healthz through HAProxy", within: 60) { try RawClient.status(port: front, path: "/healthz", host: "127.0.0.1") }
        }
        try #require(health == "200", "HAProxy did not come up:\n\(proxy.output.suffix(2000))")
        // And every node up in HAProxy's eyes (two passed checks each) before clients
        // arrive, or they all land on the first: round robin over /status names each
        // node's slot.
        var seen: Set<String> = []
        while seen.count < slots.count, Date() < deadline {
            let body = try? await onThread("GET /status through HAProxy", within: 60) { () throws -> Data in
                let client = try RawClient(port: front)
                client.send("GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                _ = client.readUntilClosed(seconds: 30)
                return client.received
            }
            if let body, let start = body.range(of: Data("\r\n\r\n".utf8)),
                let status = try? JSONSerialization.jsonObject(with: body[start.upperBound...]) as? [String: Any],
                let slot = status["slot"] as? String
            {
                seen.insert(slot)
            }
            try await pause(for: .milliseconds(50))
        }
        try #require(seen.count == slots.count, "HAProxy never sent a request to every node: \(seen.sorted())\n\(proxy.output.suffix(2000))")

        let clients = (0..<200).map { _ in ResumingClient() }
        for client in clients { client.move(to: String(front)) }
        for client in clients { client.run() }
        // What the clients have, for a failure message: the least-served client's rows.
        let progress = { @Sendable in
            let behind = clients.min { $0.received.count < $1.received.count }
            return "\(clients.filter { $0.isSubscribed }.count) of \(clients.count) subscribed; the furthest behind: \(behind?.received.summary ?? "")"
        }
        try await eventually("all 200 clients to subscribe through HAProxy", within: 90, seen: progress) { clients.allSatisfy { $0.isSubscribed } }

        let rows = 300
        // Rows 1-100, and every client has them; then node 2 dies without a word while
        // rows 101-300 are being written, so its clients must resume elsewhere. (One
        // deadline for all clients: a client that lags does not add a minute.)
        try await LiveDatabase.psql(url, ResumeAcrossRestartTests.script(1...100))
        try await eventually("every client to have rows 1-100", within: 90, seen: progress) { clients.allSatisfy { $0.received.count >= 100 } }
        let writer = Task { try await LiveDatabase.psql(url, ResumeAcrossRestartTests.script(101...rows)) }
        _ = try await nodes[1].process.stop(SIGKILL)
        try await eventually("every client to have all \(rows) rows after node 2 was killed", within: 120, seen: progress) {
            clients.allSatisfy { $0.received.count >= rows || !$0.received.errorFrames.isEmpty }
        }
        try await within(120, "the writer of rows 101-\(rows)") { try await writer.value }
        // Every client closes at once; one deadline for all of them.
        for client in clients { client.stop() }
        try await within(60, "200 clients to close their sessions", seen: progress) {
            for client in clients { try await client.finish(seconds: 60) }
        }
        for node in [nodes[0], nodes[2]] { _ = try await node.process.stop(SIGTERM) }
        _ = try await proxy.stop(SIGTERM)

        let complete = clients.filter { $0.received.ids == Array(1...rows) }
        let reconnected = clients.filter { $0.sessionCount > 1 }
        #expect(reconnected.count > 0, "the killed node's clients reconnected")
        #expect(complete.count == clients.count, {
            let bad = clients.first { $0.received.ids != Array(1...rows) }
            let ids = bad?.received.ids ?? []
            return "\(clients.count - complete.count) of \(clients.count) clients incomplete; one got \(ids.count) rows, missing \(Set(1...rows).subtracting(ids).sorted().prefix(10)), \(ids.count - Set(ids).count) repeated, errors \(bad?.received.errorFrames ?? [])"
        }())
    }
}
