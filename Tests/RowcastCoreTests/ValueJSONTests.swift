import Testing
@testable import RowcastCore

@Suite struct ValueJSONTests {
    func json(_ text: String, _ shape: ValueShape) throws -> String {
        var writer = JSONWriter()
        try ValueJSON.append(Array(text.utf8)[...], shape: shape, to: &writer)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    @Test func scalars() throws {
        #expect(try json("t", .bool) == "true")
        #expect(try json("f", .bool) == "false")
        #expect(try json("1.10", .number) == "1.10")
        #expect(try json("-0", .number) == "-0")
        #expect(try json("1e+300", .number) == "1e+300")
        #expect(try json("NaN", .number) == "\"NaN\"")
        #expect(try json("-Infinity", .number) == "\"-Infinity\"")
        #expect(try json("2024-01-01 10:00:00.5", .timestamp) == "\"2024-01-01T10:00:00.5\"")
        #expect(try json("0001-01-01 00:00:00 BC", .timestamp) == "\"0001-01-01T00:00:00 BC\"")
        #expect(try json("infinity", .timestamptz) == "\"infinity\"")
        #expect(try json("2024-06-01 10:00:00+00", .timestamptz) == "\"2024-06-01T10:00:00+00:00\"")
        #expect(try json("0044-03-15 12:00:00+00 BC", .timestamptz) == "\"0044-03-15T12:00:00+00:00 BC\"")
        #expect(try json("{\"a\": 1}", .json) == "{\"a\": 1}")
        #expect(try json("say \"hi\"\\\n", .text) == #""say \"hi\"\\\n""#)
    }

    @Test func arrays() throws {
        #expect(try json("{}", .array(element: .number, delimiter: 44)) == "[]")
        #expect(try json("{1,NULL,3}", .array(element: .number, delimiter: 44)) == "[1,null,3]")
        #expect(try json("[0:1]={7,8}", .array(element: .number, delimiter: 44)) == "[7,8]")
        #expect(try json("{{1,2},{3,4}}", .array(element: .number, delimiter: 44)) == "[[1,2],[3,4]]")
        #expect(try json(#"{"with \"quote\"","back\\slash",NULL,"NULL",""}"#, .array(element: .text, delimiter: 44))
            == #"["with \"quote\"","back\\slash",null,"NULL",""]"#)
        #expect(try json("{(1,1),(0,0);(2,2),(1,1)}", .array(element: .text, delimiter: 59)) == #"["(1,1),(0,0)","(2,2),(1,1)"]"#)
        #expect(try json("{t,f}", .array(element: .bool, delimiter: 44)) == "[true,false]")
        #expect(try json(#"{"2024-01-01 10:00:00+00"}"#, .array(element: .timestamptz, delimiter: 44)) == #"["2024-01-01T10:00:00+00:00"]"#)
        #expect(try json(#"{"{\"x\": 1}"}"#, .array(element: .json, delimiter: 44)) == #"[{"x": 1}]"#)
    }

    @Test func composites() throws {
        let shape = ValueShape.composite([
            .init(name: "n", shape: .number), .init(name: "s", shape: .text),
            .init(name: "a", shape: .array(element: .number, delimiter: 44)), .init(name: "z", shape: .text),
        ])
        #expect(try json(#"(1,"a ""b"", c","{1,2}",)"#, shape) == #"{"n":1,"s":"a \"b\", c","a":[1,2],"z":null}"#)
        #expect(try json(#"(,"",{},x)"#, shape) == #"{"n":null,"s":"","a":[],"z":"x"}"#)
        let nested = ValueShape.array(element: .composite([.init(name: "x", shape: .number)]), delimiter: 44)
        #expect(try json(#"{"(1)","(2)"}"#, nested) == #"[{"x":1},{"x":2}]"#)
    }

    @Test(arguments: ["{1,2", "{\"open}", "(1,2", "[1:2]{1}", "{1}}"])
    func malformedTextIsAnError(_ text: String) {
        let shape: ValueShape = text.hasPrefix("(") ? .composite([.init(name: "a", shape: .number), .init(name: "b", shape: .number)]) : .array(element: .number, delimiter: 44)
        #expect(throws: ValueConversionError.self) { try json(text, shape) }
    }

    /// Timestamps are written straight into the output; the result must be what the
    /// text-building definition (`isoT`, then `withColonOffset`) gives, for every form
    /// PostgreSQL prints.
    @Test(arguments: [
        "2024-06-01 10:00:00+00", "2024-06-01 10:00:00.123456+05:30", "2024-06-01 10:00:00-08", "1883-11-18 12:00:00-04:56:02",
        "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00 BC", "infinity", "-infinity", "2024-06-01 10:00:00", "2024-06-01",
        "12345-01-01 00:00:00+00", "2024-06-01 10:00:00+14", "x\"y 1+00", "",
    ])
    func timestampsMatchTheirDefinition(_ text: String) throws {
        let bytes = Array(text.utf8)[...]
        for colonOffset in [false, true] {
            var expected = JSONWriter()
            expected.appendString(utf8: colonOffset ? ValueJSON.withColonOffset(ValueJSON.isoT(bytes)) : ValueJSON.isoT(bytes))
            var written = JSONWriter()
            try ValueJSON.append(bytes, shape: colonOffset ? .timestamptz : .timestamp, to: &written)
            #expect(String(decoding: written.bytes, as: UTF8.self) == String(decoding: expected.bytes, as: UTF8.self))
        }
    }
}
