// libFuzzer entry point: one input is one CopyData payload's pgoutput message. It is
// decoded on its own, as a replication message, and streamed through a
// ReplicationSession after a Relation of every JSON shape, so that row conversion
// (TupleJSON, ValueJSON) sees it too. Any crash is a bug: inputs from the server are
// never trusted.

import RowcastCore

private let relation: [UInt8] = {
    // public.fz: one column of each shape: int4 (key), text, bool, numeric, json,
    // timestamptz, date, int4[], and a user type (composite, learned below).
    var bytes: [UInt8] = [0x52, 0, 0, 0, 1] + Array("public".utf8) + [0] + Array("fz".utf8) + [0, 0x64, 0, 9]
    for (name, type) in [("a", 23), ("b", 25), ("c", 16), ("d", 1700), ("e", 114), ("f", 1184), ("g", 1082), ("h", 1007), ("i", 90001)] as [(String, UInt32)] {
        bytes += [name == "a" ? 1 : 0] + Array(name.utf8) + [0]
        bytes += (0..<4).reversed().map { UInt8(truncatingIfNeeded: type >> (8 * UInt32($0))) } + [0xFF, 0xFF, 0xFF, 0xFF]
    }
    return bytes
}()

private func xLogData(_ message: [UInt8]) -> [UInt8] {
    [0x77] + [UInt8](repeating: 0, count: 24) + message
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    _ = try? PgOutputMessage.decode(bytes[...])
    _ = try? ReplicationMessage.decode(bytes[...])
    var session = ReplicationSession(configuration: .init())
    var actions: [ReplicationSession.Action] = []
    session.handle(.received(xLogData(relation), at: 0), into: &actions)
    session.handle(.typesLearned([90001: .composite([.init(name: "x", shape: .number), .init(name: "y", shape: .array(element: .json, delimiter: UInt8(ascii: ",")))])]), into: &actions)
    session.handle(.received(xLogData([0x42] + [UInt8](repeating: 1, count: 20)), at: 0), into: &actions)
    session.handle(.received(xLogData(bytes), at: 0), into: &actions)
    session.handle(.received(bytes, at: 0), into: &actions)
    for case .deliver(let record) in actions { _ = record.jsonBytes() }
    return 0
}
