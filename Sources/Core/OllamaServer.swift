/// One Ollama server behind the gateway, as `OLLAMA_BASE_URL` names it.
public struct OllamaServer: Sendable, Hashable {
    /// Without a trailing `/`.
    public var url: String
    /// Its share of requests relative to the others (balancing divides its outstanding requests
    /// by it): a box with twice the GPUs gets `weight=2`.
    public var weight: Int
    /// What logs, metrics, `/health/ollama` and the ledger call it: the operator's `name=`, else
    /// the URL's scheme, host and port. Never the credentials or the path of the URL, where a
    /// reverse proxy's secret may be.
    public var displayName: String

    public init(url: String, weight: Int = 1, name: String? = nil) {
        self.url = url
        self.weight = weight
        self.displayName = name ?? Self.origin(of: url)
    }

    /// `scheme://host[:port]` of a URL: no user, password, path, query or fragment.
    public static func origin(of url: String) -> String {
        guard let scheme = url.range(of: "://") else { return url }
        let authority = authority(of: url)
        let host = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
        return String(url[..<scheme.upperBound]) + String(host)
    }

    /// What follows `scheme://` up to the path, query or fragment: `user:password@host:port`.
    public static func authority(of url: String) -> Substring {
        guard let scheme = url.range(of: "://") else { return url[url.endIndex...] }
        return url[scheme.upperBound...].prefix { $0 != "/" && $0 != "?" && $0 != "#" }
    }

    /// `http://gpu1:11434;weight=2;name=gpu1, http://gpu2:11434` → the servers, in order. One URL
    /// is a list of one. Refuses anything but http(s) URLs, weights from 1 to 1000, labels other
    /// than 1 to 64 of `[A-Za-z0-9._-]`, repeats, and two servers with one name. Error messages
    /// show a server by its origin, never its credentials or path.
    public static func parseList(_ text: String) throws(ConfigurationError) -> [OllamaServer] {
        var servers: [OllamaServer] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace() }
            guard var url = parts.first, !url.isEmpty else { continue }
            guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > 8, !url.contains(" ") else {
                throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "'\(url)' is not an http:// or https:// URL")
            }
            while url.hasSuffix("/") { url.removeLast() }
            var weight = 1, name: String?
            for option in parts.dropFirst() {
                let pair = option.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
                switch (pair.first?.lowercased(), pair.count == 2 ? pair[1] : nil) {
                case ("weight", let value?):
                    guard let value = Int(value), (1...1000).contains(value) else {
                        throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "weight after \(Self.origin(of: url)) must be 1 to 1000")
                    }
                    weight = value
                case ("name", let value?):
                    guard Self.isPlainName(value) else {
                        throw ConfigurationError(variable: "OLLAMA_BASE_URL",
                                                 message: "name after \(Self.origin(of: url)): 1 to 64 letters, digits, '.', '-' or '_'")
                    }
                    name = value
                default:
                    throw ConfigurationError(variable: "OLLAMA_BASE_URL",
                                             message: "'\(option)' after \(Self.origin(of: url)): the options are weight=N and name=LABEL")
                }
            }
            let server = OllamaServer(url: url, weight: weight, name: name)
            guard !servers.contains(where: { $0.url == url }) else {
                throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "\(server.displayName) is listed twice")
            }
            guard !servers.contains(where: { $0.displayName == server.displayName }) else {
                throw ConfigurationError(variable: "OLLAMA_BASE_URL",
                                         message: "two servers would both be called \(server.displayName): give them name=LABEL")
            }
            servers.append(server)
        }
        guard !servers.isEmpty else { throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "names no server") }
        return servers
    }

    static func isPlainName(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count)
            && text.utf8.allSatisfy { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0 | 0x20) }
    }
}
