import Foundation
import RowcastCore
import Testing

/// Filters compare numbers exactly, as PostgreSQL's numeric does, not as doubles.
@Suite struct ExactNumberTests {
    @Test func integersPastDoublesPrecisionAreTellApart() throws {
        let filter = try RowFilter(parsing: "id=eq.9007199254740993")
        #expect(filter.matches(RawJSON(trusted: Array(#"{"id":9007199254740993}"#.utf8))))
        #expect(!filter.matches(RawJSON(trusted: Array(#"{"id":9007199254740992}"#.utf8))))
        let big = try RowFilter(parsing: "n=gt.123456789012345678901234567890")
        #expect(big.matches(RawJSON(trusted: Array(#"{"n":123456789012345678901234567890.000001}"#.utf8))))
        #expect(!big.matches(RawJSON(trusted: Array(#"{"n":123456789012345678901234567890}"#.utf8))))
    }

    @Test func spellingsOfOneValueAreEqual() throws {
        let spellings = ["100", "100.0", "1e2", "1E+2", "10e1", "1000e-1", "+100", "0100", "100.", "00100.000"]
        for a in spellings {
            for b in spellings { #expect(ExactNumber(a) == ExactNumber(b), "\(a) vs \(b)") }
        }
        #expect(ExactNumber("-0") == ExactNumber("0") && ExactNumber("0.000") == ExactNumber("0e5"))
        #expect(ExactNumber(".5") == ExactNumber("0.5"))
        for bad in ["", "-", ".", "e5", "1e", "1e+", "0x10", "inf", "nan", "1 ", " 1", "1.2.3", "--1", "1e5.5"] {
            #expect(ExactNumber(bad) == nil, "\(bad)")
        }
        #expect(ExactNumber("1e999999999999999999999") != nil, "a huge exponent saturates, never traps")
        #expect(ExactNumber("1e-999999999999999999999")! < ExactNumber("1e-30")!)
    }

    /// Against Foundation's Decimal (38 digits) on random numbers of up to 30 digits.
    @Test(arguments: 0..<20)
    func randomNumbersOrderAsDecimalDoes(seed: Int) {
        var generator = SystemRandomNumberGenerator()
        func random() -> String {
            let digits = (0..<Int.random(in: 1...30, using: &generator)).map { _ in String(Int.random(in: 0...9, using: &generator)) }.joined()
            var text = Bool.random(using: &generator) ? "-" : ""
            let point = Int.random(in: 0...digits.count, using: &generator)
            text += String(digits.prefix(point)) + (point < digits.count ? "." + digits.dropFirst(point) : "")
            if Int.random(in: 0..<4, using: &generator) == 0 { text += "e" + String(Int.random(in: -20...20, using: &generator)) }
            return text.hasPrefix(".") || text.hasPrefix("-.") ? text.replacingOccurrences(of: ".", with: "0.") : text
        }
        var wrong: [String] = []
        for _ in 0..<500 {
            let (a, b) = (random(), random())
            guard let x = ExactNumber(a), let y = ExactNumber(b), let p = Decimal(string: a), let q = Decimal(string: b) else {
                wrong.append("unparsed \(a) or \(b)")
                continue
            }
            if (x < y) != (p < q) || (x == y) != (p == q) { wrong.append("\(a) vs \(b)") }
        }
        #expect(wrong.count == 0, "\(wrong.count) disagreements with Decimal, e.g. \(wrong.first ?? "")")
    }

    /// A filter on a column is decided by that column's value alone, whatever the
    /// other columns hold (strings that look like the column, nested keys of its name).
    @Test func aFilterSeesOnlyItsColumn() throws {
        let filter = try RowFilter(parsing: "id=eq.7")
        let decoys = [
            #""note":"\"id\":7""#, #""nested":{"id":7}"#, #""list":[{"id":7}]"#, #""ID":7"#, #""id ":7"#,
            #""x":"}{\"id\":7""#, #""s":"\\\"id\\\":7""#,
        ]
        for id in ["7", "8", "7.0", "\"7\"", "null"] {
            let alone = filter.matches(RawJSON(trusted: Array(#"{"id":\#(id)}"#.utf8)))
            for decoy in decoys {
                for row in [#"{\#(decoy),"id":\#(id)}"#, #"{"id":\#(id),\#(decoy)}"#] {
                    #expect(filter.matches(RawJSON(trusted: Array(row.utf8))) == alone, "\(row)")
                }
            }
        }
    }
}
