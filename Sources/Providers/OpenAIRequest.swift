import JSONKit

/// OpenAI Chat Completions request → Ollama `/api/chat` request (wire-formats §6.1).
///
/// Supported: messages (system/developer/user/assistant/tool; text and data-URI image parts;
/// assistant tool_calls), stream, stream_options.include_usage, max_tokens,
/// max_completion_tokens, temperature, top_p, seed, presence_penalty, frequency_penalty, stop,
/// response_format, tools, tool_choice "none", reasoning_effort, logprobs, top_logprobs.
/// Refused with 400: n > 1, http(s) image URLs, audio parts, legacy `function` messages,
/// malformed tool-call arguments. Ignored (no Ollama equivalent): logit_bias, user,
/// parallel_tool_calls, service_tier, store, metadata, tool_choice other than "none".
public enum OpenAIRequestTranslator {
    /// The translated body and what the gateway needs to know about the request.
    public struct Translated: Sendable {
        public var body: OllamaBody
        public var stream: Bool
        public var includeUsage: Bool
        /// `max_completion_tokens`, else `max_tokens`, when positive.
        public var requestedOutput: Int64?
    }

    /// Translates a request for `model` (already resolved by the gateway).
    public static func translate(_ request: JSONValue, model: String) throws(TranslationError) -> Translated {
        let common = try OpenAIChatFields(request)
        guard common.choices == 1 else { throw TranslationError("n > 1 is not supported for this model", param: "n") }
        guard let messages = request["messages"], messages.kind == .array, messages.count > 0 else {
            throw TranslationError("messages must be a non-empty array", param: "messages")
        }
        var toolNames: [String: String] = [:]
        var out: [JSON] = []
        for (i, message) in messages.elements.enumerated() {
            out.append(try translateMessage(message, index: i, toolNames: &toolNames))
        }

        var options: [JSON.Member] = []
        for name in ["temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"] {
            if let value = request[name], !value.isNull { options.append(JSON.Member(name, value.json)) }
        }
        if let stop = request["stop"] {
            if stop.kind == .string { options.append(JSON.Member("stop", .array([stop.json]))) }
            else if stop.kind == .array { options.append(JSON.Member("stop", stop.json)) }
        }

        var body: [JSON.Member] = [JSON.Member("model", .string(model)), JSON.Member("messages", .array(out)),
                                   JSON.Member("stream", .bool(common.stream))]
        if let format = request["response_format"], let type = format["type"]?.string {
            switch type {
            case "json_object": body.append(JSON.Member("format", "json"))
            case "json_schema":
                guard let schema = format["json_schema"]?["schema"] else {
                    throw TranslationError("response_format.json_schema.schema is required", param: "response_format")
                }
                body.append(JSON.Member("format", schema.json))
            default: break
            }
        }
        if let tools = request["tools"], tools.count > 0, request["tool_choice"]?.isString("none") != true {
            body.append(JSON.Member("tools", .array(tools.elements.map { tool in
                guard let function = tool["function"] else { return tool.json }
                let kept = function.members.filter { $0.key != "strict" }.map { JSON.Member($0.key, $0.value.json) }
                var rebuilt = tool.members.map { JSON.Member($0.key, $0.value.json) }
                if let index = rebuilt.firstIndex(where: { $0.key == "function" }) { rebuilt[index].value = .object(kept) }
                return .object(rebuilt)
            })))
        }
        if let effort = request["reasoning_effort"]?.string {
            switch effort {
            case "none": body.append(JSON.Member("think", false))
            case "minimal": body.append(JSON.Member("think", "low"))
            default: body.append(JSON.Member("think", .string(effort)))
            }
        }
        for name in ["logprobs", "top_logprobs"] {
            if let value = request[name], !value.isNull { body.append(JSON.Member(name, value.json)) }
        }
        return Translated(body: OllamaBody(members: body, options: options), stream: common.stream,
                          includeUsage: common.includeUsage, requestedOutput: common.requestedOutput)
    }

    static func translateMessage(_ message: JSONValue, index: Int, toolNames: inout [String: String])
        throws(TranslationError) -> JSON
    {
        let role = message["role"]?.string ?? ""
        var out: [JSON.Member] = []
        switch role {
        case "system", "developer":
            out = [JSON.Member("role", "system"), JSON.Member("content", .string(try text(of: message["content"], index: index).text))]
        case "user":
            let (text, images) = try text(of: message["content"], index: index)
            out = [JSON.Member("role", "user"), JSON.Member("content", .string(text))]
            if !images.isEmpty { out.append(JSON.Member("images", .array(images.map(JSON.string)))) }
        case "assistant":
            let content = message["content"]?.isNull ?? true ? "" : try text(of: message["content"], index: index).text
            out = [JSON.Member("role", "assistant"), JSON.Member("content", .string(content))]
            if let calls = message["tool_calls"], calls.count > 0 {
                var translated: [JSON] = []
                for call in calls.elements {
                    let name = call["function"]?["name"]?.string ?? ""
                    let argumentsText = call["function"]?["arguments"]?.string ?? "{}"
                    guard let arguments = try? JSONDocument.parse(argumentsText), arguments.root.kind == .object else {
                        throw TranslationError("invalid tool call arguments in messages[\(index)]", param: "messages")
                    }
                    var members: [JSON.Member] = []
                    if let id = call["id"] {
                        if let idText = id.string { toolNames[idText] = name }
                        members.append(JSON.Member("id", id.json))
                    }
                    members.append(JSON.Member("function", ["name": .string(name), "arguments": arguments.root.json]))
                    translated.append(.object(members))
                }
                out.append(JSON.Member("tool_calls", .array(translated)))
            }
        case "tool":
            out = [JSON.Member("role", "tool"), JSON.Member("content", .string(try text(of: message["content"], index: index).text))]
            if let id = message["tool_call_id"]?.string {
                out.append(JSON.Member("tool_call_id", .string(id)))
                if let name = toolNames[id] ?? message["name"]?.string { out.append(JSON.Member("tool_name", .string(name))) }
            }
        default:
            throw TranslationError("messages[\(index)].role '\(role)' is not supported", param: "messages")
        }
        return .object(out)
    }

    /// Joins text parts and collects base64 images from `image_url` data URIs.
    static func text(of content: JSONValue?, index: Int) throws(TranslationError) -> (text: String, images: [String]) {
        guard let content, !content.isNull else { return ("", []) }
        if let text = content.string { return (text, []) }
        guard content.kind == .array else {
            throw TranslationError("messages[\(index)].content must be a string or an array of parts", param: "messages")
        }
        var texts: [String] = [], images: [String] = []
        for part in content.elements {
            switch part["type"]?.string {
            case "text": texts.append(part["text"]?.string ?? "")
            case "image_url":
                let url = part["image_url"]?["url"]?.string ?? part["image_url"]?.string ?? ""
                guard url.hasPrefix("data:"), let comma = url.firstIndex(of: ","), url[..<comma].hasSuffix(";base64") else {
                    throw TranslationError("image URLs are not supported: send images as data:image/...;base64, URIs",
                                           param: "messages")
                }
                images.append(String(url[url.index(after: comma)...]))
            default:
                throw TranslationError("content part type '\(part["type"]?.string ?? "")' is not supported", param: "messages")
            }
        }
        return (texts.joined(separator: "\n"), images)
    }
}

/// The fields of an OpenAI chat request that both routes (translated and passed through) read.
public struct OpenAIChatFields: Sendable {
    public var stream: Bool
    public var includeUsage: Bool
    /// `max_completion_tokens`, else `max_tokens`, when positive.
    public var requestedOutput: Int64?
    /// `n`: how many completions; each may use the whole output bound.
    public var choices: Int64

    public init(_ request: JSONValue) throws(TranslationError) {
        stream = request["stream"]?.bool ?? false
        includeUsage = request["stream_options"]?["include_usage"]?.bool ?? false
        let limit = request["max_completion_tokens"].flatMap { $0.isNull ? nil : $0 } ?? request["max_tokens"]
        if let limit, !limit.isNull {
            guard let n = limit.int64, n > 0 else {
                throw TranslationError("max_tokens must be a positive integer", param: "max_tokens")
            }
            requestedOutput = n
        }
        choices = 1
        if let n = request["n"], !n.isNull {
            guard let count = n.int64, (1...128).contains(count) else {
                throw TranslationError("n must be an integer from 1 to 128", param: "n")
            }
            choices = count
        }
    }
}
