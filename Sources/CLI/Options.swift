import ArgumentParser
import Core
import Foundation

/// `--database-url`, taken by every command; it overrides `DATABASE_URL` and `.env`.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: "Database to use (default: DATABASE_URL, then sqlite:///./data/lmsvr.db).")
    var databaseURL: String?

    /// The configuration from the environment, `.env` and this option, validated.
    func configuration() throws -> Configuration {
        var environment = ProcessInfo.processInfo.environment
        if let databaseURL { environment["DATABASE_URL"] = databaseURL }
        let dotEnv = try? String(contentsOfFile: ".env", encoding: .utf8)
        return try Configuration(environment: DotEnv.merged(dotEnvContents: dotEnv, environment: environment))
    }
}

/// `--json`: print exactly one JSON document instead of text for people.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print one JSON document on stdout instead of a table.")
    var json = false
}

/// `--start-date` / `--end-date`, inclusive UTC days.
struct DateRangeOptions: ParsableArguments {
    @Option(name: .customLong("start-date"), help: "First UTC day to include (YYYY-MM-DD).")
    var startDate: String?
    @Option(name: .customLong("end-date"), help: "Last UTC day to include (YYYY-MM-DD).")
    var endDate: String?

    func range() throws -> DayRange {
        func day(_ text: String?, _ flag: String) throws -> UTCDay? {
            guard let text else { return nil }
            guard let day = UTCDay(parsing: text) else {
                throw CLIError.usage("\(flag) '\(text)' is not a date; use YYYY-MM-DD")
            }
            return day
        }
        let range = DayRange(start: try day(startDate, "--start-date"), end: try day(endDate, "--end-date"))
        if let start = range.start, let end = range.end, end < start {
            throw CLIError.usage("--end-date \(end) is before --start-date \(start)")
        }
        return range
    }

    func validate() throws { _ = try range() }
}

/// Parses a decimal dollar amount argument, naming the argument when it is wrong.
func parseMoney(_ text: String, _ what: String) throws -> Money {
    do {
        return try Money(parsing: text)
    } catch {
        throw CLIError.usage("\(what): \(error.description)")
    }
}
