import Core
import JSONKit
import Logging
import Providers

/// Where a metered call goes.
enum Provider: String, Sendable {
    case ollama, openai, anthropic
}

/// Which upstream serves a model, and the model's name as priced and sent: Ollama if it serves
/// it; otherwise OpenAI's model names go to OpenAI when `OPENAI_API_KEY` is set and `claude-*` to
/// Anthropic when `ANTHROPIC_API_KEY` is set; anything else goes to Ollama, whose 404 then
/// passes through. Ollama names are normalised as Ollama resolves them (`ModelName.ollama`);
/// provider names are checked and kept as written.
///
/// Ollama's model list is cached for `ttl` and only fetched when a pass-through provider is
/// configured and the name could belong to it, so the Ollama-only path never pays for it.
actor ModelRouter {
    let upstream: UpstreamClient
    let configuration: Configuration
    let catalog: PriceCatalog
    let ttl: Duration
    let logger: Logger
    let ollama: OllamaPool
    private var served: Set<String> = []
    private var fetchedAt: ContinuousClock.Instant?

    init(upstream: UpstreamClient, configuration: Configuration, logger: Logger, ollama: OllamaPool,
         catalog: PriceCatalog = .shipped, ttl: Duration = .seconds(15)) {
        self.upstream = upstream
        self.ollama = ollama
        self.configuration = configuration
        self.logger = logger
        self.catalog = catalog
        self.ttl = ttl
    }

    static let openAIPrefixes = ["gpt-", "chatgpt-", "o1", "o3", "o4", "text-embedding-", "omni-moderation"]

    nonisolated static func looksLikeOpenAI(_ model: String, catalog: PriceCatalog) -> Bool {
        catalog.entry(for: model)?.provider == "openai" || openAIPrefixes.contains { model.hasPrefix($0) }
    }

    /// The provider and the normalised name for a model a client named. Throws a 400 for a name
    /// that is too long or that no upstream could accept.
    func resolve(_ raw: String) async throws(GatewayError) -> (provider: Provider, model: String) {
        guard raw.utf8.count <= ModelName.maxBytes else { throw .invalidRequest(ModelName.Problem.tooLong.description) }
        let openAI = configuration.openAIAPIKey != nil && Self.looksLikeOpenAI(raw, catalog: catalog)
        let anthropic = configuration.anthropicAPIKey != nil && raw.hasPrefix("claude-")
        if openAI || anthropic {
            if let name = try? ModelName.ollama(raw), await ollamaServes(name) { return (.ollama, name) }
            do {
                return (openAI ? .openai : .anthropic, try ModelName.checkedProviderName(raw))
            } catch {
                throw .invalidRequest(error.description)
            }
        }
        do {
            return (.ollama, try ModelName.ollama(raw))
        } catch {
            throw .invalidRequest(error.description)
        }
    }

    private func ollamaServes(_ model: String) async -> Bool {
        // Several servers: the pool's checks know every server's models (a server out of the
        // rotation keeps what it served when last seen, so its names never go to a provider).
        if !ollama.isSingle {
            await ollama.firstCheck()
            return ollama.servers.contains { $0.models.contains(model) }
        }
        if fetchedAt == nil || ContinuousClock.now - fetchedAt! > ttl {
            do {
                served = try await ModelCatalogReader(upstream: upstream, baseURL: configuration.ollamaBaseURL).servedNames()
                fetchedAt = .now
            } catch {
                // Without Ollama's list, a name that could be either goes to the provider: say so.
                logger.warning("could not read Ollama's model list", metadata: ["error": "\(error)"])
            }
        }
        return served.contains(model)
    }
}

/// Reads the names Ollama serves, normalised.
struct ModelCatalogReader: Sendable {
    let upstream: UpstreamClient
    let baseURL: String
    /// Bounds each wait for the answer (default: the upstream read timeout).
    var timeout: Duration? = nil

    /// The names a listing (`/api/tags`, or `/api/ps` for the loaded ones) holds, normalised.
    func servedNames(path: String = "/api/tags") async throws(GatewayError) -> Set<String> {
        Set(try await models(path: path).compactMap { model in
            (model["name"]?.string ?? model["model"]?.string).flatMap { try? ModelName.ollama($0) }
        })
    }

    /// Ollama's `/api/tags` (or `/api/ps`) entries.
    func models(path: String = "/api/tags") async throws(GatewayError) -> [JSONValue] {
        let response = try await upstream.send(method: .GET, url: baseURL + path, timeout: timeout)
        let body = try await upstream.collect(response, idleTimeout: timeout)
        guard response.status.code == 200, let root = try? JSONDocument.parse(Array(buffer: body)).root,
              let models = root["models"], models.kind == .array
        else { throw .upstreamInvalid("Ollama's \(path) answered \(response.status.code) without a model list") }
        return Array(models.elements)
    }
}
