@testable import App
import Testing

/// Request ids name holds and ledger rows (settles are idempotent by them), so they must be
/// unique and well-formed; they begin with the time, so they sort by it.
@Suite("Request ids")
struct RequestIdTests {
    @Test func anIdIsReqAnd32LowercaseHexDigits() {
        for _ in 0..<1_000 {
            let id = RequestId.generate()
            #expect(id.utf8.count == 36 && id.hasPrefix("req_"))
            #expect(id.utf8.dropFirst(4).allSatisfy { (48...57).contains($0) || (97...102).contains($0) })
        }
    }

    @Test func idsDoNotRepeatAndUseEveryDigitInEveryRandomPlace() {
        let ids = (0..<100_000).map { _ in RequestId.generate(atMicros: 1_764_547_200_000_000) }
        #expect(Set(ids).count == ids.count) // all made in the same microsecond
        // Each of the 20 random places takes all 16 digits over 100,000 ids (a stuck nibble, a
        // byte written twice or left unwritten would not).
        for place in 16..<36 {
            let digits = Set(ids.map { Array($0.utf8)[place] })
            #expect(digits.count == 16, "place \(place) takes only \(digits.count) digits")
        }
    }

    /// The first 12 digits are the microseconds, so ids sort by when they were made (the
    /// ledger's index takes them at its right edge).
    @Test func idsBeginWithTheirMicrosecondAndSortByIt() {
        let micros: Int64 = 0x0123_4567_89AB
        #expect(RequestId.generate(atMicros: micros).hasPrefix("req_0123456789ab"))
        let times: [Int64] = [1_764_547_200_000_000, 1_764_547_200_000_001, 1_764_547_200_000_016, 1_764_547_201_000_000,
                              1_893_456_000_000_000]
        let ids = times.map { RequestId.generate(atMicros: $0) }
        #expect(ids == ids.sorted())
        let now = RequestId.generate()
        #expect(now > ids[0] && now < ids[4])
    }
}
