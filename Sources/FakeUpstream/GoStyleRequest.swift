import JSONKit

/// A request body read the way a Go server reads it into a struct (`encoding/json`): a key
/// matches a field ignoring case, and when several match, the last one wins. The fake Ollama
/// reads its requests through this, so a gateway that forwards colliding keys is caught.
struct GoStyleRequest: Sendable {
    let root: JSONValue

    init?(_ bytes: [UInt8]) {
        guard let document = try? JSONDocument.parse(bytes), document.root.kind == .object else { return nil }
        root = document.root
    }

    /// The value a Go struct field tagged `name` would receive.
    func field(_ name: String) -> JSONValue? {
        var found: JSONValue?
        for (key, value) in root.members where Self.fold(key) == Self.fold(name) { found = value }
        return found
    }

    /// Go's `bytes.EqualFold`, closely enough: Unicode case folding.
    static func fold(_ s: String) -> String { s.uppercased().lowercased() }

    /// An exact key of a map field (Ollama's `options` is `map[string]any`).
    static func mapValue(_ object: JSONValue?, _ key: String) -> JSONValue? {
        object?[key]
    }
}

/// Ollama's model references, resolved as its `model.ParseName` and `getExistingName` do:
/// `[host/][namespace/]model[:tag]`, defaults `registry.ollama.ai`, `library`, `latest`, every
/// part compared ignoring case. Written here independently of the gateway's own normaliser.
enum OllamaReference {
    /// The full name `host/namespace/model:tag`, lower-cased, or nil when it does not parse.
    static func fullName(_ raw: String) -> String? {
        var rest = Substring(raw.trimmingCharacters(in: " "))
        if rest.lowercased().hasSuffix(":local") { rest = rest.dropLast(6) }
        var tag = "latest"
        if let colon = rest.lastIndex(of: ":"), colon > (rest.lastIndex(of: "/") ?? rest.startIndex) || !rest.contains("/") {
            tag = String(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var parts = rest.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !tag.isEmpty, (1...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else { return nil }
        let model = parts.removeLast()
        let namespace = parts.popLast() ?? "library"
        let host = parts.popLast() ?? "registry.ollama.ai"
        return "\(host)/\(namespace)/\(model):\(tag)".lowercased()
    }
}

extension String {
    func trimmingCharacters(in character: Character) -> String {
        String(drop { $0 == character }.reversed().drop { $0 == character }.reversed())
    }
}
