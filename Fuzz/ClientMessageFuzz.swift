// libFuzzer entry point: one input is one WebSocket text frame from a client (any
// page on the internet, once rowcast is exposed).

import RowcastCore
import RowcastWire

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    if case .subscribe(let subscription, _, _)? = try? ClientMessage.parse(text) {
        var record = ChangeRecord(cursor: .trigger(stream: 1, sequence: 1), source: .trigger, op: .insert)
        record.schema = "public"
        record.table = "t"
        record.row = RawJSON(trusted: Array(#"{"id":7,"name":"x","ok":true,"n":null,"f":1.5e3}"#.utf8))
        _ = subscription.matches(record)
    }
    return 0
}
