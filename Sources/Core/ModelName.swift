/// Model names as clients write them, checked and normalised before anything is priced, cached
/// or written: a client chooses the name, so it must not be able to pick a price by spelling.
public enum ModelName {
    /// The longest name accepted (Ollama's longest valid reference is 350 + 80 + 80 + 80 bytes
    /// plus separators; provider names are far shorter).
    public static let maxBytes = 600

    public enum Problem: Error, Sendable, Equatable, CustomStringConvertible {
        case empty
        case tooLong
        case invalid(String)

        public var description: String {
            switch self {
            case .empty: "model is required"
            case .tooLong: "model name is longer than \(ModelName.maxBytes) bytes"
            case .invalid(let name): "invalid model name '\(name)'"
            }
        }
    }

    /// Checks a name bound for a pass-through provider (OpenAI, Anthropic): 1 to `maxBytes`
    /// bytes of printable ASCII without spaces. It goes upstream as written.
    public static func checkedProviderName(_ raw: String) throws(Problem) -> String {
        guard !raw.isEmpty else { throw .empty }
        guard raw.utf8.count <= maxBytes else { throw .tooLong }
        guard raw.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw .invalid(raw) }
        return raw
    }

    /// The name Ollama resolves a reference to, in its shortest form: `library/llama3`,
    /// `registry.ollama.ai/library/llama3:latest`, `LLAMA3` and `llama3:local` are all `llama3`.
    ///
    /// Follows Ollama's `model.ParseName` and `modelref.ParseRef`: surrounding spaces are
    /// trimmed; a `:local` suffix is dropped; `:cloud` and `-cloud` mark a cloud model, which
    /// keeps its `-cloud` tag (it is another model, with its own price); host and namespace
    /// default to `registry.ollama.ai` and `library` and are left out when they are those; the
    /// tag defaults to `latest` and is left out when it is that; every part is compared ignoring
    /// case by Ollama, so the result is lower-cased.
    public static func ollama(_ raw: String) throws(Problem) -> String {
        if let plain = plainOllamaName(raw) { return plain }
        return try parsedOllamaName(raw)
    }

    /// The common spelling, `model` or `model:tag` in lower case, answered from its bytes
    /// (every request names a model; the full parse costs several String copies): nil for
    /// anything else, which `parsedOllamaName` reads. Agrees with it wherever it answers (test).
    static func plainOllamaName(_ raw: String) -> String? {
        let bytes = raw.utf8
        var colon: String.UTF8View.Index?
        for index in bytes.indices {
            switch bytes[index] {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
                continue
            case UInt8(ascii: ":") where colon == nil:
                colon = index
            default:
                return nil
            }
        }
        let model = bytes[..<(colon ?? bytes.endIndex)]
        guard plainPart(model) else { return nil }
        guard let colon else { return raw }
        let tag = bytes[bytes.index(after: colon)...]
        // `:local`, `:cloud` and `-cloud` tags are sources, not tags: the full parse handles them.
        guard plainPart(tag), !tag.elementsEqual("local".utf8), !tag.elementsEqual("cloud".utf8),
              !tag.suffix(6).elementsEqual("-cloud".utf8) else { return nil }
        return tag.elementsEqual("latest".utf8) ? String(Substring(model)) : raw
    }

    /// A model or tag Ollama accepts, for the bytes `plainOllamaName` lets through: 1 to 80
    /// bytes, a letter, digit or `_` first.
    private static func plainPart(_ part: Substring.UTF8View) -> Bool {
        guard let first = part.first, part.count <= 80 else { return false }
        return first != UInt8(ascii: "-") && first != UInt8(ascii: ".")
    }

    /// `ollama(_:)` by Ollama's own rules, for every spelling.
    static func parsedOllamaName(_ raw: String) throws(Problem) -> String {
        let trimmed = raw.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw .empty }
        guard trimmed.utf8.count <= maxBytes else { throw .tooLong }
        let (base, source) = try sourceSuffix(trimmed)
        var rest = Substring(base)
        var tag: Substring?
        if let colon = rest.lastIndex(of: ":"), rest.lastIndex(of: "/").map({ colon > $0 }) ?? true {
            tag = rest[rest.index(after: colon)...]
            rest = rest[..<colon]
        }
        // From the right, as Ollama cuts: model, then namespace, then whatever is left is the
        // host (with an optional scheme, so "https://host/ns/model" parses).
        func cutLast(_ s: Substring) -> (Substring, Substring)? {
            s.lastIndex(of: "/").map { (s[..<$0], s[s.index(after: $0)...]) }
        }
        var model = rest, namespace: Substring = "library", host: Substring = "registry.ollama.ai"
        if let (before, last) = cutLast(rest) {
            model = last
            if let (hostPart, ns) = cutLast(before) {
                namespace = ns
                host = hostPart
                if let scheme = host.range(of: "://") { host = host[scheme.upperBound...] }
            } else {
                namespace = before
            }
        }
        guard isValid(host, .host), isValid(namespace, .namespace), isValid(model, .model),
              tag.map({ isValid($0, .tag) }) ?? true else { throw .invalid(raw) }

        var name = ""
        if host.lowercased() != "registry.ollama.ai" {
            name = host.lowercased() + "/" + namespace.lowercased() + "/"
        } else if namespace.lowercased() != "library" {
            name = namespace.lowercased() + "/"
        }
        name += model.lowercased()
        var finalTag = tag.map { $0.lowercased() } ?? "latest"
        if source == .cloud { finalTag = tag.map { $0.lowercased() + "-cloud" } ?? "cloud" }
        if finalTag != "latest" { name += ":" + finalTag }
        return name
    }

    enum Source { case unspecified, local, cloud }

    /// Ollama's `parseSourceSuffix`: `name:cloud`, `name:tag-cloud`, `name:local`.
    static func sourceSuffix(_ raw: String) throws(Problem) -> (String, Source) {
        func parse(_ s: Substring) -> (Substring, Source)? {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            let suffixRaw = s[s.index(after: colon)...].trimmingWhitespace()
            let suffix = suffixRaw.lowercased()
            if suffix == "cloud" { return (s[..<colon], .cloud) }
            if suffix == "local" { return (s[..<colon], .local) }
            if !suffixRaw.contains("/"), suffix.hasSuffix("-cloud") {
                return (Substring(String(s[...colon]) + String(suffixRaw.dropLast(6))), .cloud)
            }
            return nil
        }
        guard let (base, source) = parse(Substring(raw)) else { return (raw, .unspecified) }
        guard parse(base) == nil else { throw .invalid(raw) } // "use either :local or :cloud, not both"
        return (String(base), source)
    }

    enum Part { case host, namespace, model, tag }

    /// Ollama's `isValidPart`: a letter, digit or `_` first, then those and `-`, plus `.`
    /// (not in a namespace) and `:` (host only); at most 350 bytes for a host, 80 otherwise.
    static func isValid(_ s: Substring, _ part: Part) -> Bool {
        guard !s.isEmpty, s.utf8.count <= (part == .host ? 350 : 80) else { return false }
        func alnum(_ b: UInt8) -> Bool {
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x5F
        }
        for (i, b) in s.utf8.enumerated() {
            if i == 0 {
                guard alnum(b) else { return false }
                continue
            }
            switch b {
            case UInt8(ascii: "-"): continue
            case UInt8(ascii: "."): if part == .namespace { return false }
            case UInt8(ascii: ":"): if part != .host { return false }
            default: if !alnum(b) { return false }
            }
        }
        return true
    }
}
