@testable import App
import Testing

/// Request ids name holds and ledger rows (settles are idempotent by them), so they must be
/// unique and well-formed.
@Suite("Request ids")
struct RequestIdTests {
    @Test func anIdIsReqAnd32LowercaseHexDigits() {
        for _ in 0..<1_000 {
            let id = RequestId.generate()
            #expect(id.utf8.count == 36 && id.hasPrefix("req_"))
            #expect(id.utf8.dropFirst(4).allSatisfy { (48...57).contains($0) || (97...102).contains($0) })
        }
    }

    @Test func idsDoNotRepeatAndUseEveryDigitInEveryPlace() {
        let ids = (0..<100_000).map { _ in RequestId.generate() }
        #expect(Set(ids).count == ids.count)
        // Each of the 32 places takes all 16 digits over 100,000 ids (a stuck nibble, a byte
        // written twice or left unwritten would not).
        for place in 4..<36 {
            let digits = Set(ids.map { Array($0.utf8)[place] })
            #expect(digits.count == 16, "place \(place) takes only \(digits.count) digits")
        }
    }
}
