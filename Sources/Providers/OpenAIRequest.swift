import Foundation

/// OpenAI Chat Completions request → Ollama `/api/chat` request (wire-formats §6.1).
///
/// Supported: model, messages (system/developer/user/assistant/tool; text and data-URI image
/// parts; assistant tool_calls), stream, stream_options.include_usage, max_tokens,
/// max_completion_tokens, temperature, top_p, seed, presence_penalty, frequency_penalty, stop,
/// response_format, tools, tool_choice "none", reasoning_effort, logprobs, top_logprobs.
/// Refused with 400: n > 1, http(s) image URLs, audio parts, legacy `function` messages,
/// malformed tool-call arguments. Ignored (no Ollama equivalent): logit_bias, user,
/// parallel_tool_calls, service_tier, store, metadata, tool_choice other than "none".
public enum OpenAIRequestTranslator {
    /// What the gateway needs to know about the request besides the translated body.
    public struct Translated {
        public var ollamaBody: JSONObject
        public var model: String
        public var stream: Bool
        public var includeUsage: Bool
        public var maxOutputTokens: Int64?
    }

    public static func translate(_ request: JSONObject) throws(TranslationError) -> Translated {
        guard let model = request["model"] as? String, !model.isEmpty else {
            throw TranslationError("you must provide a model parameter", param: "model")
        }
        guard let messages = request["messages"] as? [JSONObject], !messages.isEmpty else {
            throw TranslationError("messages must be a non-empty array", param: "messages")
        }
        if let n = JSONValue.int64(request["n"]), n != 1 {
            throw TranslationError("n > 1 is not supported for this model", param: "n")
        }
        let stream = request["stream"] as? Bool ?? false
        let includeUsage = (request["stream_options"] as? JSONObject)?["include_usage"] as? Bool ?? false

        var toolNames: [String: String] = [:]
        var out: [JSONObject] = []
        for (i, message) in messages.enumerated() {
            out.append(try translateMessage(message, index: i, toolNames: &toolNames))
        }

        var options: JSONObject = [:]
        let maxTokens = JSONValue.int64(request["max_completion_tokens"]) ?? JSONValue.int64(request["max_tokens"])
        if let maxTokens { options["num_predict"] = maxTokens }
        for name in ["temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"] {
            if let value = request[name], !(value is NSNull) { options[name] = value }
        }
        if let stop = request["stop"] as? String { options["stop"] = [stop] }
        else if let stop = request["stop"] as? [String] { options["stop"] = stop }

        var body: JSONObject = ["model": model, "messages": out, "stream": stream]
        if !options.isEmpty { body["options"] = options }
        if let format = request["response_format"] as? JSONObject {
            switch format["type"] as? String {
            case "json_object": body["format"] = "json"
            case "json_schema":
                guard let schema = (format["json_schema"] as? JSONObject)?["schema"] else {
                    throw TranslationError("response_format.json_schema.schema is required", param: "response_format")
                }
                body["format"] = schema
            default: break
            }
        }
        if let tools = request["tools"] as? [JSONObject], !tools.isEmpty, (request["tool_choice"] as? String) != "none" {
            body["tools"] = tools.map { tool -> JSONObject in
                var tool = tool
                if var function = tool["function"] as? JSONObject {
                    function["strict"] = nil
                    tool["function"] = function
                }
                return tool
            }
        }
        if let effort = request["reasoning_effort"] as? String {
            switch effort {
            case "none": body["think"] = false
            case "minimal": body["think"] = "low"
            default: body["think"] = effort
            }
        }
        for name in ["logprobs", "top_logprobs"] where request[name] != nil && !(request[name] is NSNull) {
            body[name] = request[name]
        }
        return Translated(ollamaBody: body, model: model, stream: stream, includeUsage: includeUsage,
                          maxOutputTokens: maxTokens)
    }

    static func translateMessage(_ message: JSONObject, index: Int, toolNames: inout [String: String])
        throws(TranslationError) -> JSONObject
    {
        let role = message["role"] as? String ?? ""
        var out: JSONObject = [:]
        switch role {
        case "system", "developer":
            out["role"] = "system"
            out["content"] = try text(of: message["content"], index: index).text
        case "user":
            let (text, images) = try text(of: message["content"], index: index)
            out["role"] = "user"
            out["content"] = text
            if !images.isEmpty { out["images"] = images }
        case "assistant":
            out["role"] = "assistant"
            out["content"] = message["content"] is NSNull ? "" : try text(of: message["content"], index: index).text
            if let calls = message["tool_calls"] as? [JSONObject], !calls.isEmpty {
                out["tool_calls"] = try calls.map { call throws(TranslationError) -> JSONObject in
                    let function = call["function"] as? JSONObject ?? [:]
                    let name = function["name"] as? String ?? ""
                    let argumentsText = function["arguments"] as? String ?? "{}"
                    guard let arguments = try? JSONSerialization.jsonObject(with: Data(argumentsText.utf8)) as? JSONObject else {
                        throw TranslationError("invalid tool call arguments in messages[\(index)]", param: "messages")
                    }
                    if let id = call["id"] as? String { toolNames[id] = name }
                    var translated: JSONObject = ["function": ["name": name, "arguments": arguments] as JSONObject]
                    if let id = call["id"] { translated["id"] = id }
                    return translated
                }
            }
        case "tool":
            out["role"] = "tool"
            out["content"] = try text(of: message["content"], index: index).text
            if let id = message["tool_call_id"] as? String {
                out["tool_call_id"] = id
                if let name = toolNames[id] ?? (message["name"] as? String) { out["tool_name"] = name }
            }
        default:
            throw TranslationError("messages[\(index)].role '\(role)' is not supported", param: "messages")
        }
        return out
    }

    /// Joins text parts and collects base64 images from `image_url` data URIs.
    static func text(of content: Any?, index: Int) throws(TranslationError) -> (text: String, images: [String]) {
        if content == nil || content is NSNull { return ("", []) }
        if let text = content as? String { return (text, []) }
        guard let parts = content as? [JSONObject] else {
            throw TranslationError("messages[\(index)].content must be a string or an array of parts", param: "messages")
        }
        var texts: [String] = [], images: [String] = []
        for part in parts {
            switch part["type"] as? String {
            case "text": texts.append(part["text"] as? String ?? "")
            case "image_url":
                let url = ((part["image_url"] as? JSONObject)?["url"] as? String) ?? (part["image_url"] as? String) ?? ""
                guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ","),
                      url[..<comma].hasSuffix(";base64") else {
                    throw TranslationError("image URLs are not supported: send images as data:image/...;base64, URIs",
                                           param: "messages")
                }
                images.append(String(url[url.index(after: comma)...]))
            default:
                throw TranslationError("content part type '\(part["type"] as? String ?? "")' is not supported", param: "messages")
            }
        }
        return (texts.joined(separator: "\n"), images)
    }
}
