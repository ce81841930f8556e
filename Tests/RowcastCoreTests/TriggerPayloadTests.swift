import Testing
@testable import RowcastCore

@Suite struct TriggerPayloadTests {
    @Test func decodesAChange() throws {
        let text = #"{"op":"update","schema":"public","table":"my \"t\"","xid":4294967295,"i":2,"row":{"a": 1, "b": "x"},"old":{"a": 0, "b": null}}"#
        guard case .change(let change) = try TriggerPayload.decode(Array(text.utf8)) else {
            Issue.record("expected a change")
            return
        }
        #expect(change.op == .update)
        #expect(change.table == "my \"t\"")
        #expect(change.xid == 4_294_967_295)
        #expect(change.row?.text == #"{"a": 1, "b": "x"}"#)
        #expect(change.old?.text == #"{"a": 0, "b": null}"#)
        let record = change.record(cursor: .trigger(stream: 1, sequence: 1))
        #expect(record.schema == "public" && record.table == "my \"t\"")
    }

    @Test func decodesOverflowAndLoss() throws {
        #expect(try TriggerPayload.decode(Array(#"{"overflow":42}"#.utf8)) == .overflow(id: 42))
        let lost = try TriggerPayload.decode(Array(#"{"op":"insert","schema":"s","table":"t","xid":1,"i":1,"lost":"disk full"}"#.utf8))
        guard case .lost(let change, let reason) = lost else {
            Issue.record("expected a loss report")
            return
        }
        #expect(change.op == .insert)
        #expect(reason == "disk full")
    }

    @Test(arguments: [
        #"not json"#,
        #"{"op":"insert","schema":"s","table":"t"}"#,
        #"{"op":"delete","schema":"s","table":"t"}"#,
        #"{"op":"explode","schema":"s","table":"t","row":{}}"#,
        #"{"schema":"s","table":"t","row":{}}"#,
        #"{"op":"insert","table":"t","row":{}}"#,
        #"{"op":"notify","schema":"s","table":"t","row":{}}"#,
        #"{"op":"insert","schema":"s","table":"t","row":{}} trailing"#,
    ])
    func rejectsMalformedPayloads(_ text: String) {
        #expect(throws: TriggerPayloadError.self) { try TriggerPayload.decode(Array(text.utf8)) }
    }

    @Test func parsesTableNames() {
        #expect(TableName(parsing: "orders") == TableName(schema: "public", name: "orders"))
        #expect(TableName(parsing: "audit.events") == TableName(schema: "audit", name: "events"))
        #expect(TableName(parsing: "a.b.c") == nil)
        #expect(TableName(parsing: ".x") == nil)
        #expect(TableName(schema: "we\"ird", name: "t").quoted == #""we""ird"."t""#)
    }
}
