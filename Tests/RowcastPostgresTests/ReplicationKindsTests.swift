import RowcastCore
import RowcastPostgres
import Testing

/// How a Relation message's columns compare: it names each column's type by OID only,
/// so the catalog says what it cannot (a domain's base type, a case-blind collation),
/// and a column whose type the stream and the catalog disagree on is no rule's.
@Suite struct ReplicationKindsTests {
    @Test func theCatalogSaysWhatARelationMessageCannot() {
        let told: [String: ColumnKind] = ["id": .number, "tenant": .other, "name": .text, "code": .text, "gone": .number]
        let types: [String: UInt32] = ["id": 23, "tenant": 90_001, "name": 25, "code": 25, "gone": 20]
        let catalog: [String: (type: UInt32, kind: ColumnKind)] = [
            "id": (23, .number),
            // A domain over int8: the message names the domain.
            "tenant": (90_001, .number),
            // text under a case-blind collation: the message names text.
            "name": (25, .other),
            // Changed to citext after the change the stream is at.
            "code": (90_002, .other),
        ]
        let kinds = ReplicationCapture.kinds(told, types: types, catalog: catalog)
        // A column the catalog no longer has (dropped or renamed since): no rule's.
        #expect(kinds == ["id": .number, "tenant": .number, "name": .other, "code": .other, "gone": .other])
        // A stored generated column, which the message leaves out: as the catalog says.
        #expect(ReplicationCapture.kinds(["id": .number], types: ["id": 23], catalog: ["id": (23, .number), "total": (1700, .number)])
            == ["id": .number, "total": .number])
        // The stream behind a change from text to int: no rule relies on it meanwhile.
        #expect(ReplicationCapture.kinds(["n": .text], types: ["n": 25], catalog: ["n": (23, .number)]) == ["n": .other])
    }
}
