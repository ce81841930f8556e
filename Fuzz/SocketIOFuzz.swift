// libFuzzer entry point: one input is one polling POST body (or one WebSocket text
// message) that a Socket.IO client sends to /socket.io/: Engine.IO packets, the
// Socket.IO packets inside them, and the rowcast request an event carries.

import RowcastCore
import RowcastWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    for packet in EnginePacket.split(payload: body) {
        guard case .message(let message)? = try? EnginePacket.parse(packet) else { continue }
        if case .event(_, _, let name, let data) = message {
            _ = try? ClientMessage.parse(event: name, data: data.map(JSONText.init))
        }
    }
    return 0
}
