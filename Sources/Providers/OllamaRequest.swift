import Core
import JSONKit

/// A request to Ollama's native API, read as Ollama reads it (Go's `encoding/json`: a key
/// matches a field ignoring case; unknown keys are ignored) and rebuilt for forwarding with the
/// model name the gateway priced, so that what Ollama runs is what is billed.
public struct OllamaRequest: Sendable {
    public enum Endpoint: String, Sendable, CaseIterable {
        case chat = "/api/chat"
        case generate = "/api/generate"
        case embed = "/api/embed"
        case embeddings = "/api/embeddings"

        /// Chat and generate stream and produce output tokens; the embedding calls do neither.
        public var generatesText: Bool { self == .chat || self == .generate }

        /// The JSON names of the fields Ollama reads (`api.ChatRequest`, `GenerateRequest`,
        /// `EmbedRequest`, `EmbeddingRequest`). Anything else is dropped, as Ollama would ignore it.
        var fields: [String] {
            switch self {
            case .chat: ["model", "messages", "stream", "format", "keep_alive", "tools", "options", "think", "truncate",
                         "shift", "logprobs", "top_logprobs"]
            case .generate: ["model", "prompt", "suffix", "system", "template", "context", "stream", "raw", "format",
                             "keep_alive", "images", "options", "think", "truncate", "shift", "logprobs", "top_logprobs"]
            case .embed: ["model", "input", "keep_alive", "truncate", "dimensions", "options"]
            case .embeddings: ["model", "prompt", "keep_alive", "options"]
            }
        }
    }

    public let endpoint: Endpoint
    /// The model as Ollama resolves it (`ModelName.ollama`), which is also what is forwarded.
    public let model: String
    public let stream: Bool
    /// The client's own output limit (`options.num_predict` > 0), if any.
    public let requestedOutput: Int64?
    public let prompt: PromptSize
    /// Everything else to forward, with field names as Ollama spells them.
    public let body: OllamaBody

    public static func read(_ root: JSONValue, endpoint: Endpoint, bodyBytes: Int,
                            policy: OllamaOptionPolicy) throws(TranslationError) -> OllamaRequest {
        guard root.kind == .object else { throw TranslationError("request body must be a JSON object") }
        // The parser refused keys that collide ignoring case, so each field appears at most once.
        var fields: [(name: String, value: JSONValue)] = []
        for (key, value) in root.members {
            // Go folds case by Unicode rules (hence upper, then lower); ASCII keys need one pass.
            let folded = key.utf8.allSatisfy { $0 < 0x80 } ? key.lowercased() : key.uppercased().lowercased()
            if let name = endpoint.fields.first(where: { $0 == folded }) { fields.append((name, value)) }
        }
        func field(_ name: String) -> JSONValue? { fields.first { $0.name == name }?.value }

        guard let modelValue = field("model"), let raw = modelValue.string else {
            throw TranslationError("model is required", param: "model")
        }
        let model: String
        do {
            model = try ModelName.ollama(raw)
        } catch {
            throw TranslationError(error.description, param: "model")
        }
        var stream = endpoint.generatesText
        if let value = field("stream"), !value.isNull {
            guard let flag = value.bool else { throw TranslationError("stream must be true or false", param: "stream") }
            stream = flag && endpoint.generatesText
        }
        if let template = field("template"), template.string?.isEmpty == false {
            // A client's template can repeat the prompt any number of times: the prompt would
            // then outgrow every bound the gateway can hold for it.
            throw TranslationError("template is not accepted through this gateway: the model's own template applies",
                                   param: "template")
        }
        let options = field("options")
        if let options, !options.isNull, options.kind != .object {
            throw TranslationError("options must be an object", param: "options")
        }
        // Ollama converts the number to an integer by truncation; a huge value is just "a lot".
        let numPredict: Int64? = options?["num_predict"]?.double.flatMap { d in
            d.isFinite ? Int64(exactly: d.rounded(.towardZero)) ?? (d > 0 ? .max : .min) : nil
        }
        var members = [JSON.Member("model", .string(model))]
        if endpoint.generatesText { members.append(JSON.Member("stream", .bool(stream))) }
        for (name, value) in fields where !["model", "stream", "options", "keep_alive"].contains(name) {
            members.append(JSON.Member(name, value.json))
        }
        let keepAlive = field("keep_alive").flatMap { policy.drops("keep_alive") || $0.isNull ? nil : $0.json }
        return OllamaRequest(
            endpoint: endpoint, model: model, stream: stream,
            requestedOutput: endpoint.generatesText ? numPredict.flatMap { $0 > 0 ? $0 : nil } : nil,
            prompt: .ollama(root, bodyBytes: bodyBytes),
            body: OllamaBody(members: members, options: OllamaBody.filteredOptions(options, policy: policy),
                             keepAlive: keepAlive))
    }
}
