import Foundation
import RowcastCore
import RowcastPostgres
import RowcastTestSupport
import Testing

/// `row` must be exactly what the server's own `to_jsonb` gives, whatever the
/// writer's session settings. The server is the oracle: nothing here is hand-written JSON.
@Suite(.enabled(if: LiveDatabase.available, "needs the cluster that make test starts"), .timeLimit(.minutes(3)))
struct RowJSONTests {
    static let columns = """
        id int PRIMARY KEY,
        i2 smallint, i4 integer, i8 bigint, n numeric, n4 numeric(12,4), f4 real, f8 double precision,
        b boolean, t text, vc varchar(20), c char(5), nm name, by bytea,
        d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
        u uuid, j json, jb jsonb, ip inet, cidr cidr, mac macaddr, money money, bits bit varying(8),
        pt point, bx box, tsv tsvector, rng int4range, tsr tstzrange,
        ia int[], ta text[], ma int[][], tsa timestamptz[], ja jsonb[], oid oid, rc regclass,
        x xml, fz double precision, fr real, m8 macaddr8, ba bit(3)[]
        """

    static let rows = [
        """
        1, 1, 2, 3, 1.10, 12.3400, 1.5, 0.1, true, 'plain', 'vc', 'ab', 'nm', '\\x00ff',
        '2024-02-29', '12:34:56.789', '12:00+05:30', '2024-01-01 00:00:00.123456', '2024-06-01 12:00:00+02', '1 year 2 mons 3 days 04:05:06.7',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"k": [1, 2.50, null]}', '{"b": 1, "a": {"z": true}}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', 12.34, B'1010',
        '(1.5,-2)', '(1,1),(0,0)', 'a fat cat', '[1,10)', '[2024-01-01 00:00+00,2024-02-01 00:00+00)',
        '{1,NULL,3}', '{"with \\"quote\\"","back\\\\slash",NULL,"NULL",""}', '{{1,2},{3,4}}', '{"2024-01-01 10:00+00"}', ARRAY['{"x": 1}'::jsonb], 42, 'pg_class',
        '<a b="1">t &amp; u</a>', '-0', '-0', '08:00:2b:01:02:03:04:05', '{101,010}'
        """,
        """
        2, -32768, -2147483648, -9223372036854775808, 'NaN', -0.0001, 'Infinity', '-Infinity', false,
        E'tab\\there\\nnew \\u00e9 \\U0001F600 "q" \\\\ \\x01', 'ünïcödé', '  ', 'x', '\\x',
        '4713-01-01 BC', '24:00:00', '00:00:00-12', 'infinity', '-infinity', '-1 days +02:03:04',
        '00000000-0000-0000-0000-000000000000', '"just a string"', '[]', '::1', '::/0', 'ff:ff:ff:ff:ff:ff', -0.01, B'',
        '(0,0)', '(0,0),(0,0)', '', 'empty', '(,)',
        '{}', '{}', '[0:1]={7,8}', '{infinity}', '{}', 0, 'pg_type',
        '<!-- only a comment -->', 'NaN', 'NaN', 'ff:ff:ff:ff:ff:ff:ff:ff', '{}'
        """,
        """
        3, 32767, 2147483647, 9223372036854775807, 123456789012345678901234567890.123456789, 99999999.9999, 3.4028235e38, 1.7976931348623157e308, true,
        repeat('long ', 100), '', '', '', '\\xdeadbeef',
        '2000-01-01', '00:00:00', '23:59:59.999999+14', '1999-12-31 23:59:59.999999', '1970-01-01 00:00:00+00', '0',
        'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', 'null', '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', 0, B'11111111',
        '(-1e300,1e-300)', '(2,2),(-2,-2)', 'the:1A quick:2 fox', '(,5]', 'empty',
        '{{{1}}}', '{NULL}', '{{NULL,NULL}}', '{NULL}', '{null}', 4294967295, '-',
        'just text', '4.9e-324', '1.4e-45', '00:00:00:00:00:00:00:00', '{NULL,111}'
        """,
        "4" + String(repeating: ", NULL", count: 44),
    ]

    @Test func rowEqualsToJSONBWhateverTheWritersSettings() async throws {
        let table = TableName(schema: "public", name: LiveDatabase.uniqueName("types"))
        let admin = try LiveDatabase.connect()
        try admin.execute("CREATE TABLE \(table.quoted) (\(Self.columns))")
        try TriggerSetup.install(on: admin, tables: [table])
        let capture = try RunningCapture(tables: [table])
        defer { capture.finish() }

        // A writer with every output-shaping setting changed: the trigger pins them.
        let writer = try LiveDatabase.connect()
        try writer.executeScript(
            """
            SET TimeZone = 'Asia/Kolkata'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard';
            SET bytea_output = 'escape'; SET extra_float_digits = 0;
            """
        )
        for values in Self.rows {
            try writer.execute("INSERT INTO \(table.quoted) VALUES (\(values))")
        }
        let checker = try LiveDatabase.connect()
        try checker.execute("SET TimeZone = 'UTC'")
        let inserts = await capture.sink.wait(for: Self.rows.count)
        #expect(inserts.count == Self.rows.count)
        for record in inserts {
            let row = try #require(record.row)
            let view = try serverView(of: row, table: table, on: checker)
            #expect(view.expected != nil)
            #expect(view.expected == view.actual, "row \(row.text)")
        }

        let deleted = try checker.execute("SELECT to_jsonb(rowcast_row)::text FROM \(table.quoted) rowcast_row WHERE id = 4").scalar
        let updatedOld = try checker.execute("SELECT to_jsonb(rowcast_row)::text FROM \(table.quoted) rowcast_row WHERE id = 1").scalar
        try writer.execute("UPDATE \(table.quoted) SET t = t || '!' WHERE id = 1")
        try writer.execute("DELETE FROM \(table.quoted) WHERE id = 4")
        let records = await capture.sink.wait(for: Self.rows.count + 2)
        #expect(records.count == Self.rows.count + 2)
        let update = try #require(records.first { $0.op == .update })
        let updated = try #require(update.row)
        let view = try serverView(of: updated, table: table, on: checker)
        #expect(view.expected == view.actual)
        #expect(try checker.execute("SELECT $1::jsonb::text", [update.old?.text]).scalar == updatedOld)
        let delete = try #require(records.last)
        #expect(delete.op == .delete)
        #expect(deleted != nil)
        #expect(try checker.execute("SELECT $1::jsonb::text", [delete.old?.text]).scalar == deleted)
    }
}
