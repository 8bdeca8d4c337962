@testable import App
import Core
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
        let ids = (0..<100_000).map { _ in RequestId.generate(atMillis: 1_764_547_200_000) }
        #expect(Set(ids).count == ids.count) // all made in the same millisecond
        // Each of the 20 random places takes all 16 digits over 100,000 ids (a stuck nibble, a
        // byte written twice or left unwritten would not).
        for place in 16..<36 {
            let digits = Set(ids.map { Array($0.utf8)[place] })
            #expect(digits.count == 16, "place \(place) takes only \(digits.count) digits")
        }
        // The last two random bytes are not a copy of the first two (~1.5 of 100,000 match by chance).
        let copies = ids.filter { Array($0.utf8)[32..<36] == Array($0.utf8)[16..<20] }.count
        #expect(copies < 20)
    }

    /// The first 12 digits are the milliseconds, every bit of them, so ids sort by when they
    /// were made (the ledger's index takes them at its right edge) until the year 10889.
    @Test func idsBeginWithTheirMillisecondAndSortByIt() {
        #expect(RequestId.generate(atMillis: 0xFEDC_BA98_7654).hasPrefix("req_fedcba987654"))
        #expect(RequestId.generate(atMillis: 0x0123_4567_89AB).hasPrefix("req_0123456789ab"))
        let now = nowMicros() / 1000
        let times: [Int64] = [0, now - 1_000, now, now + 1, now + 16, now + 1_000, 253_402_300_799_999] // to 9999-12-31
        let ids = times.map { RequestId.generate(atMillis: $0) }
        #expect(ids == ids.sorted())
        let made = RequestId.generate()
        #expect(made > ids[1] && made < ids[5])
    }
}
