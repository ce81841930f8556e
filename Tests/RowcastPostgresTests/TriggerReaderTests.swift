@testable import RowcastPostgres
import Testing

struct TriggerReaderTests {
    @Test func onlyDecimalDigitsNameATransaction() {
        #expect(TriggerReader.batchID(Array("4270836".utf8)) == 4_270_836)
        for payload in ["", "-1", "+1", "1 OR 1=1", "１２", "99999999999999999999", #"{"overflow":1}"#, "upgraded"] {
            #expect(TriggerReader.batchID(Array(payload.utf8)) == nil, "\(payload)")
        }
    }
}
