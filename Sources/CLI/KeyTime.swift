import Core
import Foundation

/// Parsing of the key commands' spans, instants and scopes.
enum KeyTime {
    /// `90m`, `12h`, `30d`, `2w` (or `0` where allowed) → microseconds.
    static func span(_ text: String, option: String, allowZero: Bool = false) throws -> Int64 {
        if allowZero, text == "0" { return 0 }
        let units: [Character: Int64] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]
        guard let unit = text.last.flatMap({ units[$0] }), let count = Int64(text.dropLast()), count > 0,
              count <= 36_500 * 86_400 / unit else {
            throw CLIError.usage("\(option) \(text): give a count and a unit, e.g. 90m, 12h, 30d or 2w")
        }
        return count * unit * 1_000_000
    }

    /// `2027-01-31` (its start, UTC) or an RFC 3339 time → microseconds.
    static func instant(_ text: String) throws -> Int64 {
        if let day = UTCDay(parsing: text) { return day.startMicros }
        let formatter = ISO8601DateFormatter()
        for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
            formatter.formatOptions = options
            if let date = formatter.date(from: text) { return Int64(date.timeIntervalSince1970 * 1_000_000) }
        }
        throw CLIError.usage("--expires-at \(text): give a UTC date (2027-01-31) or time (2027-01-31T18:00:00Z)")
    }

    static func apis(_ text: String) throws -> Set<APIFamily> {
        do { return try KeyScope.parseAPIs(text) } catch { throw CLIError.usage("--apis: \(error)") }
    }

    static func models(_ text: String) throws -> [String] {
        do { return try KeyScope.parseModels(text) } catch { throw CLIError.usage("--models: \(error)") }
    }
}

/// Limits as typed and as shown.
enum LimitText {
    /// A positive count, or `none` (clear).
    static func limit(_ text: String, option: String) throws -> Int64? {
        if text == "none" { return nil }
        guard let value = Int64(text), value > 0, value <= RateLimits.maximum else {
            throw CLIError.usage("\(option) \(text): give a whole number from 1 to \(RateLimits.maximum), or 'none'")
        }
        return value
    }

    static func describe(_ limits: RateLimits, budget: Money?) -> String {
        let parts = [limits.requestsPerMinute.map { "\($0) rpm" }, limits.tokensPerMinute.map { "\($0) tpm" },
                     limits.concurrency.map { "\($0) at once" }, budget.map { "budget \($0)/month" }].compactMap { $0 }
        return parts.isEmpty ? "none" : parts.joined(separator: ", ")
    }
}
