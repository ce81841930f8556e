import Testing
@testable import RowcastCore

@Suite struct CursorTests {
    @Test func roundTripsAndOrders() {
        let cursors: [Cursor] = [
            .trigger(stream: 5, sequence: 1), .trigger(stream: 5, sequence: 2), .trigger(stream: 5, sequence: 0x10),
        ]
        for cursor in cursors { #expect(Cursor(cursor.description) == cursor) }
        #expect(cursors.map(\.description) == cursors.map(\.description).sorted())
        #expect(cursors == cursors.sorted())
        let replication = Cursor.replication(commitLSN: 0xFFFF_FFFF_0000_0001, index: 7)
        #expect(Cursor(replication.description) == replication)
    }

    @Test(arguments: ["", "x", "t0000000000000001.000000000000000", "q0000000000000001.0000000000000001", "t000000000000000g.0000000000000001", "t0000000000000001-0000000000000001",
        // UInt64(_:radix:) takes a sign; a cursor has none (found by make fuzz).
        "t+000000000000001.0000000000000001", "r0000000000000001.-000000000000001"])
    func rejectsForeignText(_ text: String) {
        #expect(Cursor(text) == nil)
    }
}
