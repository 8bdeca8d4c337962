/// One Ollama server behind the gateway, as `OLLAMA_BASE_URL` names it.
public struct OllamaServer: Sendable, Hashable {
    /// Without a trailing `/`.
    public var url: String
    /// Its share of requests relative to the others (balancing divides its outstanding requests
    /// by it): a box with twice the GPUs gets `weight=2`.
    public var weight: Int

    public init(url: String, weight: Int = 1) {
        self.url = url
        self.weight = weight
    }

    /// The URL without any credentials in it, for logs, metrics and `/health/ollama`.
    public var displayName: String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].firstIndex(of: "@") else { return url }
        return String(url[..<scheme.upperBound]) + String(url[url.index(after: at)...])
    }

    /// `http://gpu1:11434;weight=2, http://gpu2:11434` → the servers, in order. One URL is a list
    /// of one. Refuses anything but http(s) URLs, weights from 1 to 1000, and repeats.
    public static func parseList(_ text: String) throws(ConfigurationError) -> [OllamaServer] {
        var servers: [OllamaServer] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace() }
            guard var url = parts.first, !url.isEmpty else { continue }
            guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.count > 8, !url.contains(" ") else {
                throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "'\(url)' is not an http:// or https:// URL")
            }
            while url.hasSuffix("/") { url.removeLast() }
            var weight = 1
            for option in parts.dropFirst() {
                let pair = option.split(separator: "=", maxSplits: 1).map { $0.trimmingWhitespace() }
                guard pair.count == 2, pair[0].lowercased() == "weight", let value = Int(pair[1]), (1...1000).contains(value) else {
                    throw ConfigurationError(variable: "OLLAMA_BASE_URL",
                                             message: "'\(option)' after \(url): the only option is weight=N, N from 1 to 1000")
                }
                weight = value
            }
            guard !servers.contains(where: { $0.url == url }) else {
                throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "\(url) is listed twice")
            }
            servers.append(OllamaServer(url: url, weight: weight))
        }
        guard !servers.isEmpty else { throw ConfigurationError(variable: "OLLAMA_BASE_URL", message: "names no server") }
        return servers
    }
}
