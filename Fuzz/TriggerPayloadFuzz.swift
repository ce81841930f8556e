// libFuzzer entry point: one input is one NOTIFY payload on channel `rowcast`. Any
// role that can connect can send one, so the reader must refuse garbage cleanly.

import RowcastCore

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let payload = try? TriggerPayload.decode(bytes) {
        _ = payload
    }
    return 0
}
