import Core
import Foundation
import Providers

/// Which upstream serves a model: Ollama if it serves it; otherwise OpenAI's model names go to
/// OpenAI when `OPENAI_API_KEY` is set and `claude-*` to Anthropic when `ANTHROPIC_API_KEY` is
/// set; anything else goes to Ollama, whose 404 then passes through.
///
/// Ollama's model list is cached for `ttl` and only fetched when a pass-through provider is
/// configured and the name could belong to it, so the Ollama-only path never pays for it.
actor ModelRouter {
    enum Provider: String, Sendable { case ollama, openai, anthropic }

    let upstream: UpstreamClient
    let configuration: Configuration
    let catalog: PriceCatalog
    let ttl: Duration
    private var served: Set<String> = []
    private var fetchedAt: ContinuousClock.Instant?

    init(upstream: UpstreamClient, configuration: Configuration, catalog: PriceCatalog = .shipped, ttl: Duration = .seconds(15)) {
        self.upstream = upstream
        self.configuration = configuration
        self.catalog = catalog
        self.ttl = ttl
    }

    static let openAIPrefixes = ["gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "omni-moderation"]

    nonisolated static func looksLikeOpenAI(_ model: String, catalog: PriceCatalog) -> Bool {
        catalog.entry(for: model)?.provider == "openai" || openAIPrefixes.contains { model.hasPrefix($0) }
    }

    func provider(for model: String) async -> Provider {
        let openAI = configuration.openAIAPIKey != nil && Self.looksLikeOpenAI(model, catalog: catalog)
        let anthropic = configuration.anthropicAPIKey != nil && model.hasPrefix("claude-")
        guard openAI || anthropic else { return .ollama }
        if await ollamaServes(model) { return .ollama }
        return openAI ? .openai : .anthropic
    }

    private func ollamaServes(_ model: String) async -> Bool {
        if fetchedAt == nil || ContinuousClock.now - fetchedAt! > ttl {
            let catalog = ModelCatalogReader(upstream: upstream, baseURL: configuration.ollamaBaseURL)
            if let names = try? await catalog.servedNames() {
                served = names
                fetchedAt = .now
            }
        }
        return served.contains(model) || served.contains(model + ":latest")
    }
}

/// Reads the names Ollama serves.
struct ModelCatalogReader: Sendable {
    let upstream: UpstreamClient
    let baseURL: String

    func servedNames() async throws -> Set<String> {
        let response = try await upstream.send(method: .GET, url: baseURL + "/api/tags")
        let body = try await UpstreamClient.collect(response)
        guard response.status.code == 200,
              let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any],
              let models = object["models"] as? [[String: Any]] else { return [] }
        return Set(models.compactMap { ($0["name"] as? String) ?? ($0["model"] as? String) })
    }
}
