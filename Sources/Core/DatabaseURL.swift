/// Which database a `DATABASE_URL` names.
public enum DatabaseLocation: Sendable, Hashable {
    /// A SQLite file path (relative to the working directory or absolute).
    case sqlite(path: String)
    /// A PostgreSQL connection string, passed to libpq as given.
    case postgres(conninfo: String)

    public static let defaultURL = "sqlite:///./data/lmsvr.db"

    /// Parses `sqlite:///relative.db`, `sqlite:////absolute.db`, `postgres://…`,
    /// `postgresql://…` or a libpq `key=value` string.
    public init(url: String, variable: String = "DATABASE_URL") throws(ConfigurationError) {
        let text = url.trimmingWhitespace()
        if text.hasPrefix("sqlite://") {
            // sqlite:///./x.db → ./x.db ; sqlite:////abs/x.db → /abs/x.db ; sqlite:///x.db → x.db
            var rest = text.dropFirst("sqlite://".count)
            guard rest.hasPrefix("/") else {
                throw ConfigurationError(variable: variable,
                                         message: "use sqlite:///relative/path.db or sqlite:////absolute/path.db")
            }
            rest = rest.dropFirst()
            guard !rest.isEmpty, !rest.hasSuffix("/") else {
                throw ConfigurationError(variable: variable, message: "the sqlite URL names no file")
            }
            self = .sqlite(path: String(rest))
        } else if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") || text.contains("=") {
            self = .postgres(conninfo: text)
        } else {
            throw ConfigurationError(variable: variable,
                message: "'\(DatabaseLocation.redact(text))' is neither sqlite:///… nor postgres://…")
        }
    }

    /// Where the settle journal lives unless `JOURNAL_DIR` says otherwise: next to a SQLite
    /// file, or `./data/journal` (the container image's working directory is `/var/lib/lmsvr`).
    public var defaultJournalDirectory: String {
        switch self {
        case .sqlite(let path):
            let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            return (directory.isEmpty ? "." : directory) + "/journal"
        case .postgres: return "./data/journal"
        }
    }

    /// The location with any password replaced by `***`, safe to print.
    public var redacted: String {
        switch self {
        case .sqlite(let path): "sqlite:///" + path
        case .postgres(let conninfo): DatabaseLocation.redact(conninfo)
        }
    }

    /// Masks the password in a URL (`user:secret@`) or key=value string (`password=secret`).
    public static func redact(_ text: String) -> String {
        var result = text
        if let scheme = result.range(of: "://") {
            let afterScheme = result[scheme.upperBound...]
            if let at = afterScheme.lastIndex(of: "@") {
                let userinfo = afterScheme[..<at]
                if let colon = userinfo.firstIndex(of: ":") {
                    result.replaceSubrange(result.index(after: colon)..<at, with: "***")
                }
            }
        }
        // key=value form and ?password= query parameters.
        var output = ""
        var remainder = Substring(result)
        while let range = remainder.range(of: "password=") {
            output += remainder[..<range.upperBound] + "***"
            remainder = remainder[range.upperBound...]
            remainder = remainder.drop(while: { $0 != " " && $0 != "&" })
        }
        return output + remainder
    }
}

/// A configuration value that cannot be used; names the variable, never prints a secret.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public var variable: String
    public var message: String

    public init(variable: String, message: String) {
        self.variable = variable
        self.message = message
    }

    public var description: String { "\(variable): \(message)" }
}
