import JSONKit

/// An OpenAI chat request passed through to OpenAI (or any OpenAI-compatible upstream) with
/// the operator's key: forwarded as the client sent it, except for what billing decides.
///
/// The gateway always asks for the usage chunk, sets the output limit it held, and refuses what
/// would be charged in ways it cannot meter: priority processing (`service_tier` other than
/// `auto`, `default` or `flex`), web search (`web_search_options`), audio output (`audio`,
/// `modalities` with audio), audio input parts (priced per audio token), file inputs (PDFs:
/// tokens per page) and predicted outputs (`prediction`).
public struct OpenAIPassThrough: Sendable {
    public let fields: OpenAIChatFields
    public let prompt: PromptSize
    let request: JSONValue
    let model: String

    public static func read(_ request: JSONValue, model: String, bodyBytes: Int) throws(TranslationError) -> OpenAIPassThrough {
        let fields = try OpenAIChatFields(request)
        if let tier = request["service_tier"], !tier.isNull,
           !["auto", "default", "flex"].contains(where: { tier.isString($0) }) {
            throw TranslationError("service_tier '\(tier.string ?? tier.rawText)' is not available through this gateway",
                                   param: "service_tier")
        }
        for name in ["web_search_options", "audio", "prediction"] where request[name].map({ !$0.isNull }) ?? false {
            throw TranslationError("\(name) is not available through this gateway", param: name)
        }
        if request["modalities"].elements.contains(where: { $0.isString("audio") }) {
            throw TranslationError("audio output is not available through this gateway", param: "modalities")
        }
        for message in request["messages"].elements {
            for part in message["content"].elements {
                if part["type"]?.isString("input_audio") == true {
                    throw TranslationError("audio input is not available through this gateway", param: "messages")
                }
                // A PDF costs tokens per page that its (compressed) bytes do not bound.
                if part["type"]?.isString("file") == true {
                    throw TranslationError("file inputs are not available through this gateway", param: "messages")
                }
            }
        }
        return OpenAIPassThrough(fields: fields, prompt: .openAI(request, bodyBytes: bodyBytes), request: request, model: model)
    }

    /// The body to forward: the client's, with the output limit held (in the field the client
    /// used; `max_completion_tokens` when it used none, which every current model accepts) and
    /// the usage chunk requested when streaming.
    public func body(outputBound: Int64) -> JSON {
        func present(_ name: String) -> Bool { request[name].map { !$0.isNull } ?? false }
        let usesMaxTokens = present("max_tokens") && !present("max_completion_tokens")
        var members: [JSON.Member] = [JSON.Member("model", .string(model))]
        request.forEachMember { key, value in
            if let name = key.string, !["model", "max_tokens", "max_completion_tokens", "stream_options"].contains(name) {
                members.append(JSON.Member(name, value.json))
            }
        }
        members.append(JSON.Member(usesMaxTokens ? "max_tokens" : "max_completion_tokens", .int(outputBound)))
        if fields.stream {
            var streamOptions = request["stream_options"]?.members.filter { $0.key != "include_usage" }
                .map { JSON.Member($0.key, $0.value.json) } ?? []
            streamOptions.append(JSON.Member("include_usage", true))
            members.append(JSON.Member("stream_options", .object(streamOptions)))
        }
        return .object(members)
    }
}

/// An OpenAI embeddings request: `input` must be a string or an array of strings.
public enum OpenAIEmbeddingsRequest {
    public static func check(_ request: JSONValue) throws(TranslationError) -> JSONValue {
        guard let input = request["input"],
              input.kind == .string || (input.kind == .array && input.elements.allSatisfy { $0.kind == .string }) else {
            throw TranslationError("input must be a string or an array of strings", param: "input")
        }
        return input
    }

    /// The request as forwarded to OpenAI: the client's, with the model the gateway priced.
    public static func passThroughBody(_ request: JSONValue, model: String) -> JSON {
        var members: [JSON.Member] = [JSON.Member("model", .string(model))]
        request.forEachMember { key, value in
            if !key.isString("model") { members.append(JSON.Member(key.string ?? "", value.json)) }
        }
        return .object(members)
    }

    /// The same request for Ollama's `/api/embed`.
    public static func ollamaBody(_ request: JSONValue, input: JSONValue, model: String) -> OllamaBody {
        var members: [JSON.Member] = [JSON.Member("model", .string(model)), JSON.Member("input", input.json)]
        if let dimensions = request["dimensions"], !dimensions.isNull { members.append(JSON.Member("dimensions", dimensions.json)) }
        return OllamaBody(members: members)
    }
}
