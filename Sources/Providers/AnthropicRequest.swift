import Foundation

/// Anthropic Messages request → Ollama `/api/chat` request (wire-formats §6.3).
///
/// Supported: model, max_tokens (required), system (string or text blocks), messages with text,
/// base64 image, tool_use, tool_result and thinking blocks, stop_sequences, temperature, top_p,
/// top_k, tools, tool_choice "none", thinking enabled/disabled, stream. Refused with 400: a
/// missing or non-positive max_tokens, empty messages, URL image sources, document blocks.
/// Ignored: metadata, cache_control, tool_choice auto/any/tool (Ollama cannot enforce them),
/// thinking.budget_tokens, redacted_thinking blocks.
public enum AnthropicRequestTranslator {
    public struct Translated {
        public var ollamaBody: JSONObject
        public var model: String
        public var stream: Bool
        public var maxOutputTokens: Int64
    }

    public static func translate(_ request: JSONObject) throws(TranslationError) -> Translated {
        guard let model = request["model"] as? String, !model.isEmpty else {
            throw TranslationError("model: Field required")
        }
        guard let maxTokens = JSONValue.int64(request["max_tokens"]), maxTokens > 0 else {
            throw TranslationError("max_tokens: Field required and must be positive")
        }
        guard let messages = request["messages"] as? [JSONObject], !messages.isEmpty else {
            throw TranslationError("messages: at least one message is required")
        }
        var out: [JSONObject] = []
        if let system = request["system"] {
            let text = try flatten(system, where: "system")
            if !text.isEmpty { out.append(["role": "system", "content": text]) }
        }
        for (i, message) in messages.enumerated() {
            out.append(contentsOf: try translateMessage(message, index: i))
        }
        var options: JSONObject = ["num_predict": maxTokens]
        let stops = request["stop_sequences"] as? [String] ?? []
        if !stops.isEmpty { options["stop"] = stops }
        for name in ["temperature", "top_p", "top_k"] {
            if let value = request[name], !(value is NSNull) { options[name] = value }
        }
        let stream = request["stream"] as? Bool ?? false
        var body: JSONObject = ["model": model, "messages": out, "stream": stream, "options": options]
        let toolChoice = (request["tool_choice"] as? JSONObject)?["type"] as? String
        if let tools = request["tools"] as? [JSONObject], !tools.isEmpty, toolChoice != "none" {
            body["tools"] = tools.map { tool -> JSONObject in
                var function: JSONObject = ["name": tool["name"] as? String ?? ""]
                if let description = tool["description"] { function["description"] = description }
                function["parameters"] = tool["input_schema"] ?? ["type": "object"] as JSONObject
                return ["type": "function", "function": function]
            }
        }
        if let thinking = request["thinking"] as? JSONObject {
            body["think"] = (thinking["type"] as? String) == "enabled"
        }
        return Translated(ollamaBody: body, model: model, stream: stream, maxOutputTokens: maxTokens)
    }

    /// One Anthropic message may become several Ollama messages: tool results go first, as
    /// `tool` messages, then the rest of the turn.
    static func translateMessage(_ message: JSONObject, index: Int) throws(TranslationError) -> [JSONObject] {
        guard let role = message["role"] as? String, role == "user" || role == "assistant" else {
            throw TranslationError("messages.\(index).role: must be 'user' or 'assistant'")
        }
        if let text = message["content"] as? String { return [["role": role, "content": text]] }
        guard let blocks = message["content"] as? [JSONObject] else {
            throw TranslationError("messages.\(index).content: must be a string or a list of blocks")
        }
        var results: [JSONObject] = []
        var texts: [String] = [], images: [String] = [], thinking: [String] = [], calls: [JSONObject] = []
        for block in blocks {
            switch block["type"] as? String {
            case "text": texts.append(block["text"] as? String ?? "")
            case "image":
                let source = block["source"] as? JSONObject ?? [:]
                guard source["type"] as? String == "base64", let data = source["data"] as? String else {
                    throw TranslationError("messages.\(index): only base64 image sources are supported")
                }
                images.append(data)
            case "tool_use":
                var call: JSONObject = ["function": ["name": block["name"] as? String ?? "",
                                                     "arguments": block["input"] ?? JSONObject()] as JSONObject]
                if let id = block["id"] { call["id"] = id }
                calls.append(call)
            case "tool_result":
                var result: JSONObject = ["role": "tool", "content": try flatten(block["content"] ?? "", where: "tool_result")]
                if let id = block["tool_use_id"] { result["tool_call_id"] = id }
                results.append(result)
            case "thinking": thinking.append(block["thinking"] as? String ?? "")
            case "redacted_thinking": continue
            default:
                throw TranslationError("messages.\(index): content block type '\(block["type"] as? String ?? "")' is not supported")
            }
        }
        if texts.isEmpty && images.isEmpty && calls.isEmpty && thinking.isEmpty { return results }
        var turn: JSONObject = ["role": role, "content": texts.joined(separator: "\n")]
        if !images.isEmpty { turn["images"] = images }
        if !calls.isEmpty { turn["tool_calls"] = calls }
        if !thinking.isEmpty { turn["thinking"] = thinking.joined(separator: "\n") }
        return results + [turn]
    }

    /// The text of a string or of a list of text blocks.
    static func flatten(_ value: Any, where place: String) throws(TranslationError) -> String {
        if let text = value as? String { return text }
        guard let blocks = value as? [JSONObject] else { throw TranslationError("\(place): must be a string or text blocks") }
        return blocks.compactMap { $0["type"] as? String == "text" ? $0["text"] as? String : nil }.joined(separator: "\n")
    }
}
