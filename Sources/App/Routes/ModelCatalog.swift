import AsyncHTTPClient
import Core
import Foundation
import NIOCore

/// The models a customer can call: what Ollama serves (from `/api/tags`) joined with prices and
/// the metadata `sync-models` stored, plus priced models Ollama does not serve.
public struct ModelCatalog: Sendable {
    let upstream: UpstreamClient
    let store: any Store
    let configuration: Configuration

    public init(upstream: UpstreamClient, store: any Store, configuration: Configuration) {
        self.upstream = upstream
        self.store = store
        self.configuration = configuration
    }

    /// One model with its pricing status. `@unchecked Sendable`: `tag` holds immutable values
    /// from JSONSerialization (strings, numbers, arrays, dictionaries) and is never mutated.
    public struct Entry: @unchecked Sendable {
        public var name: String
        public var servedByOllama: Bool
        /// Ollama's `/api/tags` entry, unchanged (nil when Ollama does not serve it).
        public var tag: [String: Any]?
        public var price: ModelPrice
        public var priceSource: PriceSource
        public var metadata: ModelMetadata?

        public var json: [String: Any] {
            var object: [String: Any] = tag ?? ["name": name, "model": name]
            object["served_by_ollama"] = servedByOllama
            var pricing: [String: Any] = [
                "source": priceSource.rawValue,
                "per_request_usd": price.perRequest.decimalString, "per_model_usd": price.perModel.decimalString,
                "input_per_1m_usd": price.inputPer1M.decimalString, "output_per_1m_usd": price.outputPer1M.decimalString,
            ]
            if let cached = price.cachedInputPer1M { pricing["cached_input_per_1m_usd"] = cached.decimalString }
            object["pricing"] = pricing
            if let m = metadata {
                var meta: [String: Any] = [:]
                if let v = m.family { meta["family"] = v }
                if let v = m.parameterSize { meta["parameter_size"] = v }
                if let v = m.quantization { meta["quantization"] = v }
                if let v = m.contextLength { meta["context_length"] = v }
                if let v = m.description { meta["description"] = v }
                meta["synced_at"] = Timestamp.iso8601(micros: m.syncedAtMicros)
                object["metadata"] = meta
            }
            return object
        }
    }

    /// Every Ollama server's `/api/tags` models, as parsed JSON objects: the union, each model
    /// once, with the servers that have it under `servers`. Throws only when no server answered.
    public func servedModels() async throws(GatewayError) -> [[String: Any]] {
        let (models, failures) = await servedAcrossServers()
        if models.isEmpty, let first = failures.first, failures.count == configuration.ollamaServers.count { throw first.error }
        return models
    }

    /// The union of the servers' listings (`/api/tags`, or `/api/ps`), each model once with the
    /// servers that list it under `servers`, and the servers that could not be read (with why).
    public func servedAcrossServers(path: String = "/api/tags")
        async -> (models: [[String: Any]], failures: [(server: String, error: GatewayError)])
    {
        let servers = configuration.ollamaServers
        var bodies = [Result<ByteBuffer, GatewayError>?](repeating: nil, count: servers.count)
        await withTaskGroup(of: (Int, Result<ByteBuffer, GatewayError>).self) { group in
            for (index, server) in servers.enumerated() {
                group.addTask {
                    do throws(GatewayError) {
                        return (index, .success(try await self.tagsBody(server.url, path: path)))
                    } catch {
                        return (index, .failure(error))
                    }
                }
            }
            for await (index, result) in group { bodies[index] = result }
        }
        var models: [[String: Any]] = [], position: [String: Int] = [:]
        var failures: [(server: String, error: GatewayError)] = []
        for (server, body) in zip(servers, bodies) {
            switch body!.flatMap(Self.models) {
            case .failure(let error): failures.append((server.displayName, error))
            case .success(let tags):
                for var tag in tags {
                    guard let name = (tag["name"] as? String) ?? (tag["model"] as? String) else { continue }
                    if let at = position[name] {
                        models[at]["servers"] = ((models[at]["servers"] as? [String]) ?? []) + [server.displayName]
                    } else {
                        tag["servers"] = [server.displayName]
                        position[name] = models.count
                        models.append(tag)
                    }
                }
            }
        }
        return (models, failures)
    }

    /// One server's `/api/tags` (or `/api/ps`) body.
    func tagsBody(_ baseURL: String, path: String = "/api/tags") async throws(GatewayError) -> ByteBuffer {
        let response = try await upstream.send(method: .GET, url: baseURL + path)
        let body = try await upstream.collect(response, limit: 8 << 20)
        guard response.status.code == 200 else { throw .upstreamInvalid("Ollama's \(path) answered \(response.status.code)") }
        return body
    }

    /// The models of an `/api/tags` body.
    static func models(_ body: ByteBuffer) -> Result<[[String: Any]], GatewayError> {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any],
              let models = object["models"] as? [[String: Any]]
        else { return .failure(.upstreamInvalid("Ollama's /api/tags answered without a model list")) }
        return .success(models)
    }

    public func entries() async throws -> [Entry] {
        try await entries(served: try await servedModels())
    }

    /// Every priced model, joined with what Ollama serves when it answers; when it does not,
    /// the priced models alone and why Ollama could not be read (an operator listing prices
    /// should not be stopped by a server that is down).
    public func listing() async throws -> (entries: [Entry], ollamaError: String?) {
        let (models, failures) = await servedAcrossServers()
        let error = failures.isEmpty ? nil : failures.map { "\($0.server) (\($0.error.message))" }.joined(separator: ", ")
        return (try await entries(served: models), error)
    }

    func entries(served: [[String: Any]]) async throws -> [Entry] {
        let now = nowMicros()
        let prices: [PriceRecord], metadata: [ModelMetadata]
        do {
            prices = try await store.currentPrices(atMicros: now)
            metadata = try await store.modelMetadata()
        } catch {
            throw GatewayError.databaseUnavailable
        }
        func priced(_ name: String) -> PriceRecord? {
            prices.first { $0.model == name }
                ?? prices.first { name.hasSuffix(":latest") && $0.model == String(name.dropLast(7)) }
        }
        var entries: [Entry] = served.compactMap { tag in
            guard let name = (tag["name"] as? String) ?? (tag["model"] as? String) else { return nil }
            let price = priced(name)
            return Entry(name: name, servedByOllama: true, tag: tag,
                         price: price?.price ?? ModelPrice(perRequest: configuration.defaultPricePerRequest),
                         priceSource: price == nil ? .fallback : .configured,
                         metadata: metadata.first { $0.name == name })
        }
        let servedNames = Set(entries.map(\.name))
        for record in prices where !servedNames.contains(record.model) && !servedNames.contains(record.model + ":latest") {
            entries.append(Entry(name: record.model, servedByOllama: false, tag: nil, price: record.price,
                                 priceSource: .configured, metadata: metadata.first { $0.name == record.model }))
        }
        return entries
    }

    /// Reads `/api/show` for every served model and stores family, parameter size, quantization
    /// and context window (`model_info["<arch>.context_length"]`).
    public func sync() async throws -> [ModelMetadata] {
        var synced: [ModelMetadata] = []
        for tag in try await servedModels() {
            guard let name = (tag["name"] as? String) ?? (tag["model"] as? String) else { continue }
            let server = (tag["servers"] as? [String])?.first
                .flatMap { name in configuration.ollamaServers.first { $0.displayName == name } }?.url ?? configuration.ollamaBaseURL
            let response = try await upstream.send(method: .POST, url: server + "/api/show",
                                                   body: JSONText.encode(["model": name]))
            let body = try await upstream.collect(response)
            guard response.status.code == 200,
                  let show = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any]
            else { throw GatewayError.upstreamInvalid("/api/show for \(name) answered \(response.status.code)") }
            synced.append(Self.metadata(name: name, show: show, tag: tag))
        }
        try await store.upsertModelMetadata(synced)
        return synced
    }

    static func metadata(name: String, show: [String: Any], tag: [String: Any]) -> ModelMetadata {
        let details = (show["details"] as? [String: Any]) ?? (tag["details"] as? [String: Any]) ?? [:]
        let info = show["model_info"] as? [String: Any] ?? [:]
        var context: Int64?
        if let arch = info["general.architecture"] as? String {
            context = (info["\(arch).context_length"] as? NSNumber)?.int64Value
        }
        let capabilities = (show["capabilities"] as? [String])?.joined(separator: ", ")
        return ModelMetadata(
            name: name, family: details["family"] as? String, parameterSize: details["parameter_size"] as? String,
            quantization: details["quantization_level"] as? String, contextLength: context,
            description: capabilities.map { "capabilities: \($0)" }, syncedAtMicros: nowMicros())
    }
}

