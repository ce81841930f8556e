import NIOCore
import NIOEmbedded
import RowcastWire
import Testing

@testable import RowcastServer

/// `--requests-per-second-per-address`: one address's requests share one schedule,
/// others have their own, and what the server remembers of addresses stays bounded.
@Suite struct AddressPaceTests {
    static func address(_ index: Int) throws -> ClientAddress {
        ClientAddress(try SocketAddress(ipAddress: "10.\(index >> 16 & 255).\(index >> 8 & 255).\(index & 255)", port: 4000))
    }

    @Test func anAddressWaitsAfterItsBurstAndAnotherDoesNot() throws {
        let pace = AddressPace(perSecond: 10)
        let start = NIODeadline.uptimeNanoseconds(5_000_000_000)
        let (one, other) = (try Self.address(1), try Self.address(2))
        for _ in 0..<10 { #expect(pace.turn(for: one, now: start) == .now) }
        #expect(pace.turn(for: one, now: start) == .after(.milliseconds(100)))
        #expect(pace.turn(for: other, now: start) == .now)
        // Window records matched for the address: 500 are ten more turns.
        pace.charge(one, examined: 500, now: start)
        #expect(pace.turn(for: one, now: start) == .after(.milliseconds(1_200)))
    }

    @Test func addressesWhoseBurstIsBackAreForgotten() throws {
        let pace = AddressPace(perSecond: 10)
        let start = NIODeadline.uptimeNanoseconds(5_000_000_000)
        for index in 0..<5_000 { _ = pace.turn(for: try Self.address(index), now: start) }
        #expect(pace.addressesHeld == 5_000)
        // A second later every one of them could send a whole burst again: once the
        // count passes twice what the last pruning kept, they are forgotten, and the
        // 5,000 addresses of this second are all that is held (not 10,000).
        for index in 5_000..<10_000 { _ = pace.turn(for: try Self.address(index), now: start + .seconds(1)) }
        #expect(pace.addressesHeld == 5_000)
    }

    /// A scan that would wait longer than a WebSocket may (its pongs are read with its
    /// messages) is refused with the seconds to wait, and takes no turn; a shorter one
    /// waits its turn.
    @Test func aScanThatWouldWaitPastAPingPeriodIsRefusedNotHeld() async throws {
        let pace = AddressPace(perSecond: 10)
        let (owing, other) = (try Self.address(1), try Self.address(2))
        // 20,000 records matched: 400 turns, 40 s at 10 a second.
        pace.charge(owing, examined: 20_000)
        let loop = EmbeddedEventLoop()
        func refusal() async -> Int? {
            do throws(ClientMessageError) {
                _ = try await pace.settle(owing, reserving: 0, on: loop)
                return nil
            } catch {
                guard case .tooManyScans(let seconds) = error else { return nil }
                return seconds
            }
        }
        // About 39 s owed past the burst (less as time goes by; far above the 10 s a scan may wait).
        let first = await refusal()
        #expect(first.map { (30...40).contains($0) } == true, "refused with \(first.map(String.init) ?? "no refusal")")
        // Refusals take no turn: refused again, for no longer.
        let second = await refusal()
        #expect(second.map { $0 <= first ?? 0 } == true, "then \(second.map(String.init) ?? "no refusal")")
        // Another address scans at once.
        _ = try await pace.settle(other, reserving: 0, on: loop)
    }

    /// A scan pays ahead for what it may read, in the critical section that lets it
    /// start: a scan asked for at the same moment is refused before the first has
    /// matched anything; what the first did not use goes back, and the next goes at once.
    @Test func aScanPaysAheadAndGetsBackWhatItDidNotUse() async throws {
        let pace = AddressPace(perSecond: 10)
        let address = try Self.address(1)
        let loop = EmbeddedEventLoop()
        func refused() async -> Bool {
            do throws(ClientMessageError) {
                _ = try await pace.settle(address, reserving: 0, on: loop)
                return false
            } catch {
                return true
            }
        }
        // 20,000 records: 400 turns, 40 s at 10 a second.
        var paid = try await pace.settle(address, reserving: 20_000, on: loop)
        #expect(paid.records == 20_000)
        #expect(await refused())
        // It matched 100: the 19,900 others go back, and a scan goes at once.
        paid.records -= 100
        pace.refund(address, paid)
        #expect(await refused() == false)
        // A minute's worth at most is paid ahead (600 turns).
        let capped = try await pace.settle(try Self.address(2), reserving: 1_000_000, on: loop)
        #expect(capped.records == 600 * MessagePace.recordsPerTurn)
    }

    /// What a scan paid ahead goes back only as far as the time it bought is still
    /// ahead: a replay that held its prepayment while that time went by gives back
    /// nothing, or an address could bank turns and spend them in one burst.
    @Test func timeThatWentByIsNotGivenBack() async throws {
        let pace = AddressPace(perSecond: 10)
        let address = try Self.address(3)
        let loop = EmbeddedEventLoop()
        // Another scan owes 40 s now; a prepayment whose time already ran out gives
        // back nothing of it.
        _ = try await pace.settle(address, reserving: 20_000, on: loop)
        pace.refund(address, AddressPace.Prepayment(records: 19_900, until: .now() - .seconds(1)))
        do throws(ClientMessageError) {
            _ = try await pace.settle(address, reserving: 0, on: loop)
            Issue.record("a spent prepayment was given back")
        } catch {
            guard case .tooManyScans = error else { throw error }
        }
    }

    @Test(arguments: [0, -1])
    func noRateNeverWaitsAndHoldsNothing(_ rate: Int) throws {
        let pace = AddressPace(perSecond: rate)
        for index in 0..<100 { #expect(pace.turn(for: try Self.address(index % 3)) == .now) }
        pace.charge(try Self.address(0), examined: 1_000_000)
        #expect(pace.addressesHeld == 0)
    }
}
