import Testing
@testable import RowcastCore

/// Separators followed by a combining mark are still separators: `.` + U+0301 is one
/// Swift `Character`, and splitting on Characters joined what it should have parted
/// (found by `make fuzz`'s http target: a subscription echoed as `public.̩` came back
/// as the table `public."public.̩"`).
@Suite struct ScalarSplitTests {
    @Test func tableNamesSplitAtADotBeforeACombiningMark() throws {
        let table = try #require(TableName(parsing: "sales.\u{301}orders"))
        #expect(table.schema == "sales" && table.name == "\u{301}orders")
        let alone = try #require(TableName(parsing: "\u{329}"))
        #expect(alone == TableName(schema: "public", name: "\u{329}"))
        // The echo of a table reads back as that table.
        #expect(TableName(parsing: alone.description) == alone)
        #expect(TableName(parsing: "a.\u{301}b.c") == nil)
    }

    @Test func filtersSplitAtTheirSeparatorsBeforeACombiningMark() throws {
        let eq = try RowFilter(parsing: "id=eq.\u{301}x")
        #expect(eq.column == "id" && eq.comparison == .eq && eq.values == ["\u{301}x"])
        let list = try RowFilter(parsing: "id=in.(1,\u{301}2)")
        #expect(list.values == ["1", "\u{301}2"])
        let column = try RowFilter(parsing: "\u{301}c=\u{301}eq.1".replacingOccurrences(of: "=\u{301}", with: "="))
        #expect(column.column == "\u{301}c")
        #expect(try RowFilter(parsing: list.description) == list)
    }

    @Test func aQuoteBeforeACombiningMarkIsDoubled() {
        // PostgreSQL reads the quote's byte whatever follows it.
        #expect(TableName.quoteIdentifier("a\"\u{301}b") == "\"a\"\"\u{301}b\"")
        #expect(TableName.quoteIdentifier("plain") == "\"plain\"")
    }
}
