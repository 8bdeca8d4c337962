import JSONKit

/// Anthropic Messages request → Ollama `/api/chat` request (wire-formats §6.3).
///
/// Supported: max_tokens (required), system (string or text blocks), messages with text,
/// base64 image, tool_use, tool_result and thinking blocks, stop_sequences, temperature, top_p,
/// top_k, tools, tool_choice "none", thinking enabled/disabled, stream. Refused with 400: a
/// missing or non-positive max_tokens, empty messages, URL image sources, document blocks.
/// Ignored: metadata, cache_control, tool_choice auto/any/tool (Ollama cannot enforce them),
/// thinking.budget_tokens, redacted_thinking blocks.
public enum AnthropicRequestTranslator {
    public struct Translated: Sendable {
        public var body: OllamaBody
        public var stream: Bool
        public var requestedOutput: Int64
    }

    public static func translate(_ request: JSONValue, model: String) throws(TranslationError) -> Translated {
        let maxTokens = try AnthropicRequestFields.maxTokens(request)
        guard let messages = request["messages"], messages.kind == .array, messages.count > 0 else {
            throw TranslationError("messages: at least one message is required")
        }
        var out: [JSON] = []
        if let system = request["system"], !system.isNull {
            let text = try flatten(system, where: "system")
            if !text.isEmpty { out.append(["role": "system", "content": .string(text)]) }
        }
        for (i, message) in messages.elements.enumerated() {
            out.append(contentsOf: try translateMessage(message, index: i))
        }
        var options: [JSON.Member] = []
        let stops = request["stop_sequences"]
        if let stops, stops.kind == .array, stops.count > 0 { options.append(JSON.Member("stop", stops.json)) }
        for name in ["temperature", "top_p", "top_k"] {
            if let value = request[name], !value.isNull { options.append(JSON.Member(name, value.json)) }
        }
        let stream = request["stream"]?.bool ?? false
        var body: [JSON.Member] = [JSON.Member("model", .string(model)), JSON.Member("messages", .array(out)),
                                   JSON.Member("stream", .bool(stream))]
        if let tools = request["tools"], tools.count > 0, request["tool_choice"]?["type"]?.isString("none") != true {
            body.append(JSON.Member("tools", .array(tools.elements.map { tool in
                var function: [JSON.Member] = [JSON.Member("name", .string(tool["name"]?.string ?? ""))]
                if let description = tool["description"] { function.append(JSON.Member("description", description.json)) }
                function.append(JSON.Member("parameters", tool["input_schema"]?.json ?? ["type": "object"]))
                return ["type": "function", "function": .object(function)]
            })))
        }
        if let thinking = request["thinking"], thinking.kind == .object {
            body.append(JSON.Member("think", .bool(thinking["type"]?.isString("enabled") == true)))
        }
        return Translated(body: OllamaBody(members: body, options: options), stream: stream, requestedOutput: maxTokens)
    }

    /// One Anthropic message may become several Ollama messages: tool results go first, as
    /// `tool` messages, then the rest of the turn.
    static func translateMessage(_ message: JSONValue, index: Int) throws(TranslationError) -> [JSON] {
        guard let role = message["role"]?.string, role == "user" || role == "assistant" else {
            throw TranslationError("messages.\(index).role: must be 'user' or 'assistant'")
        }
        if let text = message["content"]?.string { return [["role": .string(role), "content": .string(text)]] }
        guard let blocks = message["content"], blocks.kind == .array else {
            throw TranslationError("messages.\(index).content: must be a string or a list of blocks")
        }
        var results: [JSON] = []
        var texts: [String] = [], images: [JSON] = [], thinking: [String] = [], calls: [JSON] = []
        for block in blocks.elements {
            switch block["type"]?.string {
            case "text": texts.append(block["text"]?.string ?? "")
            case "image":
                guard block["source"]?["type"]?.isString("base64") == true, let data = block["source"]?["data"],
                      data.kind == .string else {
                    throw TranslationError("messages.\(index): only base64 image sources are supported")
                }
                images.append(data.json)
            case "tool_use":
                var call: [JSON.Member] = []
                if let id = block["id"] { call.append(JSON.Member("id", id.json)) }
                call.append(JSON.Member("function", ["name": .string(block["name"]?.string ?? ""),
                                                     "arguments": block["input"]?.json ?? .object([])]))
                calls.append(.object(call))
            case "tool_result":
                var result: [JSON.Member] = [JSON.Member("role", "tool"),
                                             JSON.Member("content", .string(try flatten(block["content"], where: "tool_result")))]
                if let id = block["tool_use_id"] { result.append(JSON.Member("tool_call_id", id.json)) }
                results.append(.object(result))
            case "thinking": thinking.append(block["thinking"]?.string ?? "")
            case "redacted_thinking": continue
            default:
                throw TranslationError("messages.\(index): content block type '\(block["type"]?.string ?? "")' is not supported")
            }
        }
        if texts.isEmpty && images.isEmpty && calls.isEmpty && thinking.isEmpty { return results }
        var turn: [JSON.Member] = [JSON.Member("role", .string(role)), JSON.Member("content", .string(texts.joined(separator: "\n")))]
        if !images.isEmpty { turn.append(JSON.Member("images", .array(images))) }
        if !calls.isEmpty { turn.append(JSON.Member("tool_calls", .array(calls))) }
        if !thinking.isEmpty { turn.append(JSON.Member("thinking", .string(thinking.joined(separator: "\n")))) }
        return results + [.object(turn)]
    }

    /// The text of a string or of a list of text blocks.
    static func flatten(_ value: JSONValue?, where place: String) throws(TranslationError) -> String {
        guard let value, !value.isNull else { return "" }
        if let text = value.string { return text }
        guard value.kind == .array else { throw TranslationError("\(place): must be a string or text blocks") }
        return value.elements.compactMap { $0["type"]?.isString("text") == true ? $0["text"]?.string : nil }
            .joined(separator: "\n")
    }
}

/// What both Anthropic routes read from a request.
public enum AnthropicRequestFields {
    /// `max_tokens`: required and positive.
    public static func maxTokens(_ request: JSONValue) throws(TranslationError) -> Int64 {
        guard let maxTokens = request["max_tokens"]?.int64, maxTokens > 0 else {
            throw TranslationError("max_tokens: Field required and must be positive")
        }
        return maxTokens
    }
}

/// An Anthropic request passed through to Anthropic with the operator's key: forwarded as the
/// client sent it, with the model priced and the output bound held (`max_tokens`), standard
/// processing only (`service_tier: standard_only`, since priority capacity is billed at other
/// rates), and no server tools (web search, web fetch, code execution, MCP servers), which
/// Anthropic bills per use in ways the gateway cannot hold for, nor PDF or fetched documents.
public struct AnthropicPassThrough: Sendable {
    /// `anthropic-beta` features that change what a request costs (long-context pricing) or add
    /// server-side work billed apart from tokens.
    public static let refusedBetas = ["context-1m", "mcp-client", "code-execution", "files-api", "web-fetch",
                                      "web-search", "skills", "container"]

    /// Refuses an `anthropic-beta` header naming any of `refusedBetas`.
    public static func checkBetas(_ header: String?) throws(TranslationError) {
        for beta in (header ?? "").split(separator: ",").map({ String($0.filter { !$0.isWhitespace }) })
            where refusedBetas.contains(where: { beta.hasPrefix($0) }) {
            throw TranslationError("the anthropic-beta feature '\(beta)' is not available through this gateway")
        }
    }

    public let stream: Bool
    public let requestedOutput: Int64
    public let prompt: PromptSize
    let request: JSONValue
    let model: String

    public static func read(_ request: JSONValue, model: String, bodyBytes: Int) throws(TranslationError) -> AnthropicPassThrough {
        let maxTokens = try AnthropicRequestFields.maxTokens(request)
        for name in ["mcp_servers", "container"] where request[name].map({ !$0.isNull }) ?? false {
            throw TranslationError("\(name) is not available through this gateway")
        }
        for tool in request["tools"].elements {
            if let type = tool["type"]?.string, ["web_search", "web_fetch", "code_execution"].contains(where: { type.hasPrefix($0) }) {
                throw TranslationError("the server tool '\(type)' is not available through this gateway")
            }
        }
        // A PDF or a fetched document costs tokens per page that its bytes do not bound.
        for message in request["messages"].elements {
            for block in message["content"].elements where block["type"]?.isString("document") == true {
                let source = block["source"]
                guard source?["type"]?.isString("text") == true || source?["type"]?.isString("content") == true else {
                    throw TranslationError("documents other than text are not available through this gateway")
                }
            }
        }
        return AnthropicPassThrough(stream: request["stream"]?.bool ?? false, requestedOutput: maxTokens,
                                    prompt: .anthropic(request, bodyBytes: bodyBytes), request: request, model: model)
    }

    public func body(outputBound: Int64) -> JSON {
        var members: [JSON.Member] = [JSON.Member("model", .string(model))]
        request.forEachMember { key, value in
            if let name = key.string, !["model", "max_tokens", "service_tier"].contains(name) {
                members.append(JSON.Member(name, value.json))
            }
        }
        members.append(JSON.Member("max_tokens", .int(outputBound)))
        members.append(JSON.Member("service_tier", "standard_only"))
        return .object(members)
    }
}
