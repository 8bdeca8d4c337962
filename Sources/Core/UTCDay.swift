/// A calendar day in UTC, with the conversions reports and budget periods need.
///
/// Calendar arithmetic is done here on integers (the proleptic Gregorian calendar) so that
/// neither Foundation's calendars nor the machine's time zone can shift a report by a day.
public struct UTCDay: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int

    public init?(year: Int, month: Int, day: Int) {
        guard (1...9999).contains(year), (1...12).contains(month),
              (1...UTCDay.daysIn(month: month, year: year)).contains(day) else { return nil }
        self.year = year
        self.month = month
        self.day = day
    }

    /// Parses `YYYY-MM-DD` strictly.
    public init?(parsing text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              parts.allSatisfy({ $0.allSatisfy(\.isASCIIDigit) }),
              let y = Int(parts[0]), let m = Int(parts[1]), let d = Int(parts[2]) else { return nil }
        self.init(year: y, month: m, day: d)
    }

    /// The day that contains an instant given in microseconds since the epoch.
    public init(containingMicros micros: Int64) {
        let days = Int(micros >= 0 ? micros / 86_400_000_000 : (micros - 86_399_999_999) / 86_400_000_000)
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        self.year = yoe + era * 400 + (m <= 2 ? 1 : 0)
        self.month = m
        self.day = d
    }

    /// Days since 1970-01-01.
    public var daysSinceEpoch: Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = month > 2 ? month - 3 : month + 9
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// The first microsecond of this day.
    public var startMicros: Int64 { Int64(daysSinceEpoch) * 86_400_000_000 }
    /// The first microsecond of the next day.
    public var endMicros: Int64 { startMicros + 86_400_000_000 }

    public var description: String {
        let y = String(year), m = String(month), d = String(day)
        return String(repeating: "0", count: max(0, 4 - y.count)) + y + "-" + (m.count < 2 ? "0" : "") + m + "-"
            + (d.count < 2 ? "0" : "") + d
    }

    public static func < (lhs: UTCDay, rhs: UTCDay) -> Bool { lhs.daysSinceEpoch < rhs.daysSinceEpoch }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let day = UTCDay(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "bad date"))
        }
        self = day
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}

/// An inclusive range of UTC days, for reports and exports. Either end may be open.
public struct DayRange: Sendable, Hashable, Codable {
    public var start: UTCDay?
    public var end: UTCDay?

    public init(start: UTCDay?, end: UTCDay?) {
        self.start = start
        self.end = end
    }

    /// The half-open interval of microseconds the range covers.
    public var micros: (from: Int64, until: Int64) {
        (start?.startMicros ?? Int64.min, end?.endMicros ?? Int64.max)
    }
}

/// The current time in microseconds since the Unix epoch.
public func nowMicros() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Formats instants as RFC 3339 UTC timestamps with microseconds: `2026-11-27T22:49:57.123456Z`.
public enum Timestamp {
    public static func iso8601(micros: Int64) -> String {
        let day = UTCDay(containingMicros: micros)
        let intoDay = micros - day.startMicros
        let seconds = intoDay / 1_000_000, fraction = intoDay % 1_000_000
        if (0...9999).contains(day.year) {
            // Digits written in place: every log line starts with one of these.
            let fields: [(Int, Int)] = [(day.year, 4), (day.month, 2), (day.day, 2), (Int(seconds / 3600), 2),
                                        (Int(seconds / 60 % 60), 2), (Int(seconds % 60), 2), (Int(fraction), 6)]
            return String(unsafeUninitializedCapacity: 27) { buffer in
                var at = 0
                for (index, (value, width)) in fields.enumerated() {
                    var rest = value
                    for position in stride(from: at + width - 1, through: at, by: -1) {
                        buffer[position] = UInt8(ascii: "0") + UInt8(rest % 10)
                        rest /= 10
                    }
                    at += width
                    buffer[at] = Self.separators[index]
                    at += 1
                }
                return at
            }
        }
        func pad(_ n: Int64, _ width: Int) -> String {
            let s = String(n)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(day)T\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2)).\(pad(fraction, 6))Z"
    }

    /// What follows each field of `iso8601`: year-month-dayThh:mm:ss.ffffffZ.
    private static let separators: [UInt8] = Array("--T::.Z".utf8)

    /// `2026-11-27 22:49:57`, for tables.
    public static func short(micros: Int64) -> String {
        let full = iso8601(micros: micros)
        return String(full.prefix(19)).replacingOccurrences(of: Character("T"), with: Character(" "))
    }
}

extension String {
    func replacingOccurrences(of target: Character, with replacement: Character) -> String {
        String(map { $0 == target ? replacement : $0 })
    }
}
