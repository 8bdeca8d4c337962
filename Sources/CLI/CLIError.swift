import Core
import Migrate

/// A failure the CLI reports as one line on stderr, with the exit status the contract gives it:
/// 1 for operational failures (not found, database unreachable), 2 for usage errors.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    var exitCode: Int32

    static func usage(_ message: String) -> CLIError { CLIError(description: message, exitCode: 2) }
    static func operational(_ message: String) -> CLIError { CLIError(description: message, exitCode: 1) }

    /// Maps any error to one actionable line and an exit status. `database` is the redacted
    /// location, named when the database cannot be reached.
    static func from(_ error: Error, database: String?) -> CLIError {
        switch error {
        case let error as CLIError:
            return error
        case let error as ConfigurationError:
            return .usage("invalid configuration: \(error.description)")
        case let error as MoneyParseError:
            return .usage(error.description)
        case StoreError.unavailable(let reason):
            let place = database.map { " at \($0)" } ?? ""
            return .operational("cannot reach the database\(place): \(reason)")
        case let error as StoreError:
            return .operational(error.description)
        case let error as MigrationError:
            return .operational(error.description)
        case let error as UsageFileError:
            return .operational(error.description)
        default:
            return .operational("\(error)")
        }
    }
}
