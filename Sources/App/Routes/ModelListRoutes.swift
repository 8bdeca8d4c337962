import Core
import Foundation
import Hummingbird
import NIOCore
import Providers

/// `GET /v1/models` and `GET /v1/models/{id}`: OpenAI's shape, or Anthropic's when the request
/// carries `anthropic-version`. Each entry adds its pricing and synced metadata.
struct ModelListRoutes: Sendable {
    let upstream: UpstreamClient
    let store: any Store
    let configuration: Configuration
    let ollama: OllamaPool

    func register(on router: Router<GatewayContext>) {
        router.get("/v1/models") { request, context in try await list(request, for: context.principal) }
        router.get("/v1/models/{id}") { request, context in
            let id = try context.parameters.require("id")
            let anthropic = request.headers[.anthropicVersion] != nil
            guard let entry = try await entries(for: context.principal).first(where: { $0["id"] as? String == id }) else {
                throw GatewayError.unknownModel(id)
            }
            return json(anthropic ? anthropicShape(entry) : entry)
        }
    }

    func list(_ request: Request, for principal: Principal?) async throws -> Response {
        let models = try await entries(for: principal)
        if request.headers[.anthropicVersion] != nil {
            let data = models.map(anthropicShape)
            return json(["data": data, "has_more": false, "first_id": data.first?["id"] ?? NSNull(),
                         "last_id": data.last?["id"] ?? NSNull()])
        }
        return json(["object": "list", "data": models])
    }

    /// Every model the key may call, in OpenAI's shape, with `pricing` and `metadata`.
    func entries(for principal: Principal?) async throws -> [[String: Any]] {
        try await allEntries().filter { ScopedListing.allows(principal, ollamaName: $0["id"] as? String ?? "") }
    }

    func allEntries() async throws -> [[String: Any]] {
        let catalog = ModelCatalog(upstream: upstream, store: store, configuration: configuration)
        var out: [[String: Any]] = try await catalog.entries().map { entry in
            var object = entry.json
            let created = (entry.tag?["modified_at"] as? String).flatMap(Self.unixSeconds) ?? 0
            let tag = object
            object = ["id": entry.name, "object": "model", "created": created,
                      "owned_by": entry.servedByOllama ? "ollama" : "lmsvr", "pricing": tag["pricing"] ?? NSNull()]
            if let metadata = tag["metadata"] { object["metadata"] = metadata }
            return object
        }
        let listed = Set(out.compactMap { $0["id"] as? String })
        for entry in PriceCatalog.shipped.entries where !listed.contains(entry.model) {
            let enabled = entry.provider == "openai" ? configuration.openAIAPIKey != nil : configuration.anthropicAPIKey != nil
            guard enabled else { continue }
            out.append(["id": entry.model, "object": "model", "created": 0, "owned_by": entry.provider,
                        "pricing": ["source": "catalog", "per_request_usd": "0.00", "per_model_usd": "0.00",
                                    "input_per_1m_usd": entry.price.inputPer1M.decimalString,
                                    "output_per_1m_usd": entry.price.outputPer1M.decimalString,
                                    "cached_input_per_1m_usd": entry.price.cachedInputPer1M?.decimalString ?? NSNull()] as [String: Any]])
        }
        return out
    }

    func anthropicShape(_ entry: [String: Any]) -> [String: Any] {
        var object: [String: Any] = ["type": "model", "id": entry["id"] ?? "", "display_name": entry["id"] ?? "",
                                     "created_at": Timestamp.iso8601(micros: Int64((entry["created"] as? Int) ?? 0) * 1_000_000)]
        object["pricing"] = entry["pricing"]
        if let metadata = entry["metadata"] { object["metadata"] = metadata }
        return object
    }

    func json(_ object: [String: Any]) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: JSONText.encode(object)))
    }

    /// RFC 3339 with optional fraction and offset → Unix seconds.
    static func unixSeconds(_ text: String) -> Int? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return Int(date.timeIntervalSince1970) }
        formatter.formatOptions = [.withInternetDateTime]
        // Go writes nanoseconds; trim the fraction to what the formatter takes.
        if let dot = text.firstIndex(of: "."), let end = text[dot...].firstIndex(where: { $0 == "Z" || $0 == "+" || $0 == "-" }) {
            return formatter.date(from: String(text[..<dot]) + String(text[end...])).map { Int($0.timeIntervalSince1970) }
        }
        return formatter.date(from: text).map { Int($0.timeIntervalSince1970) }
    }
}
