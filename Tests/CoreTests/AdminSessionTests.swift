import Core
import Testing

@Suite("Admin session")
struct AdminSessionTests {
    let session = AdminSession(token: "admin-token-0123456789abcdef")

    @Test func theTokenMatchesOnlyItself() {
        #expect(session.isToken("admin-token-0123456789abcdef"))
        for other in ["", "admin-token-0123456789abcde", "admin-token-0123456789abcdef ", "ADMIN-TOKEN-0123456789ABCDEF"] {
            #expect(!session.isToken(other), "\(other)")
        }
    }

    @Test func aCookieLivesTwelveHoursAndCannotBeForged() {
        let now: Int64 = 1_790_000_000_000_000
        let cookie = session.cookieValue(issuedAtMicros: now)
        #expect(session.isValid(cookie: cookie, nowMicros: now))
        #expect(session.isValid(cookie: cookie, nowMicros: now + AdminSession.lifetimeMicros))
        #expect(!session.isValid(cookie: cookie, nowMicros: now + AdminSession.lifetimeMicros + 1))
        #expect(!session.isValid(cookie: cookie, nowMicros: now - 1), "issued in the future")
        // Another token's cookie, a moved issue time, a flipped digit, junk.
        #expect(!AdminSession(token: "another-token-0123456789").isValid(cookie: cookie, nowMicros: now))
        let code = cookie.split(separator: ".")[1]
        #expect(!session.isValid(cookie: "\(now + 1).\(code)", nowMicros: now + 2))
        let flipped = String(code.dropLast()) + (code.last == "0" ? "1" : "0")
        #expect(!session.isValid(cookie: "\(now).\(flipped)", nowMicros: now))
        // Values whose arithmetic would overflow: refused, not a trap that kills the process.
        for extreme in ["-9223372036854775808.", "-9223372036854775808.\(code)", "9223372036854775807.\(code)",
                        "-1.\(code)", "99999999999999999999.\(code)"] {
            #expect(!session.isValid(cookie: extreme, nowMicros: now), "\(extreme)")
            #expect(!session.isValid(cookie: extreme, nowMicros: .max) && !session.isValid(cookie: extreme, nowMicros: .min))
        }
        for junk in ["", ".", "\(now).", "\(now)", "+\(now).\(code)", "0\(now).\(code)", "\(now).\(code.uppercased())", "\(now).\(code)00"] {
            #expect(!session.isValid(cookie: junk, nowMicros: now), "\(junk)")
        }
    }

    @Test func monthsParseStrictlyAndStep() {
        #expect(BudgetPeriod(parsing: "2026-11") == BudgetPeriod(year: 2026, month: 11))
        for bad in ["2026-13", "2026-1", "26-11", "2026-11-01", "2026/11", "-2026-11", "２０２６-11", ""] {
            #expect(BudgetPeriod(parsing: bad) == nil, "\(bad)")
        }
        #expect(BudgetPeriod(year: 2026, month: 1).previous == BudgetPeriod(year: 2025, month: 12))
        #expect(BudgetPeriod(year: 2026, month: 12).next == BudgetPeriod(year: 2027, month: 1))
        #expect(UTCDay(year: 2028, month: 2, day: 28)!.next == UTCDay(year: 2028, month: 2, day: 29)!)
    }
}
