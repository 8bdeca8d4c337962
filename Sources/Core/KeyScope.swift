/// The API families a key may call (each is one dialect's routes).
public enum APIFamily: String, Sendable, Hashable, Codable, CaseIterable {
    case ollama
    case openai
    case anthropic
}

/// What a key may use: some API families and some models, each `nil` for everything.
///
/// Model patterns are globs: `*` matches any run of characters, `?` one character, anything else
/// itself. A pattern matches a model as the gateway prices it (`llama3.2:latest`) and also that
/// name without Ollama's implied `:latest` tag, so `llama3.2` allows `llama3.2:latest`; case is
/// ignored.
public struct KeyScope: Sendable, Hashable, Codable {
    public var apis: Set<APIFamily>?
    public var models: [String]?

    public init(apis: Set<APIFamily>? = nil, models: [String]? = nil) {
        self.apis = apis
        self.models = models
    }

    public static let everything = KeyScope()

    public var isRestricted: Bool { apis != nil || models != nil }

    public func allows(_ family: APIFamily) -> Bool { apis?.contains(family) ?? true }

    public func allows(model: String) -> Bool {
        guard let models else { return true }
        let model = model.lowercased()
        let bare = model.hasSuffix(":latest") ? String(model.dropLast(7)) : nil
        return models.contains { pattern in
            Glob.matches(pattern, model) || (bare.map { Glob.matches(pattern, $0) } ?? false)
        }
    }

    // MARK: Text form (the database columns and the CLI)

    /// `ollama,openai` → the set; throws on an unknown family.
    public static func parseAPIs(_ text: String) throws(ScopeError) -> Set<APIFamily> {
        var out = Set<APIFamily>()
        for part in text.split(separator: ",") {
            let name = part.trimmingSpaces.lowercased()
            guard let family = APIFamily(rawValue: name) else {
                throw ScopeError("unknown API family '\(name)': use ollama, openai or anthropic")
            }
            out.insert(family)
        }
        guard !out.isEmpty else { throw ScopeError("name at least one API family (ollama, openai, anthropic)") }
        return out
    }

    /// `llama3*,gpt-4o-mini` → the patterns; refuses empty and over-long ones.
    public static func parseModels(_ text: String) throws(ScopeError) -> [String] {
        // Lower-cased: Ollama compares names ignoring case, and so does the scope.
        let patterns = text.split(separator: ",").map { String($0.trimmingSpaces).lowercased() }.filter { !$0.isEmpty }
        guard !patterns.isEmpty else { throw ScopeError("name at least one model pattern, e.g. 'llama3*'") }
        for pattern in patterns where pattern.utf8.count > ModelName.maxBytes || pattern.contains(where: \.isWhitespace) {
            throw ScopeError("bad model pattern '\(pattern)': no spaces, at most \(ModelName.maxBytes) bytes")
        }
        return patterns
    }

    public var apisText: String? { apis.map { APIFamily.allCases.filter($0.contains).map(\.rawValue).joined(separator: ",") } }
    public var modelsText: String? { models?.joined(separator: ",") }

    /// From the database columns (written by this type, so trusted to parse).
    public init(apisText: String?, modelsText: String?) {
        self.apis = apisText.map { Set($0.split(separator: ",").compactMap { APIFamily(rawValue: String($0)) }) }
        self.models = modelsText.map { $0.split(separator: ",").map(String.init) }
    }
}

/// A scope an operator typed that cannot be used.
public struct ScopeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Glob matching with `*` and `?`, iterative (no backtracking blow-up on `*a*a*a…`).
enum Glob {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.utf8), t = Array(text.utf8)
        var pi = 0, ti = 0, star = -1, mark = 0
        while ti < t.count {
            if pi < p.count, p[pi] == UInt8(ascii: "?") || p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == UInt8(ascii: "*") {
                star = pi
                mark = ti
                pi += 1
            } else if star >= 0 {
                pi = star + 1
                mark += 1
                ti = mark
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        guard let first = firstIndex(where: { $0 != " " }), let last = lastIndex(where: { $0 != " " }) else { return "" }
        return self[first...last]
    }
}
