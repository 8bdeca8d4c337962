import Foundation

/// Ollama `/api/chat` answers → OpenAI Chat Completions answers (wire-formats §6.2, §6.5).
public enum OpenAIResponseTranslator {
    /// `stop` becomes `tool_calls` when the model called tools; `length` stays.
    static func finishReason(_ doneReason: String?, sawToolCalls: Bool) -> String {
        if sawToolCalls { return "tool_calls" }
        return doneReason == "length" ? "length" : "stop"
    }

    /// Ollama tool calls → OpenAI's, with arguments as a JSON string.
    static func toolCalls(_ calls: [JSONObject], startIndex: Int, requestId: String) -> [JSONObject] {
        calls.enumerated().map { offset, call in
            let function = call["function"] as? JSONObject ?? [:]
            let arguments = function["arguments"].map(JSONValue.text) ?? "{}"
            let id = call["id"] as? String ?? "call_\(requestId.suffix(8))_\(startIndex + offset)"
            return ["index": startIndex + offset, "id": id, "type": "function",
                    "function": ["name": function["name"] as? String ?? "", "arguments": arguments] as JSONObject]
        }
    }

    static func usage(prompt: Int64, completion: Int64) -> String {
        "{\"prompt_tokens\":\(prompt),\"completion_tokens\":\(completion),\"total_tokens\":\(prompt + completion)}"
    }

    /// A whole non-streaming answer.
    public static func completion(_ ollama: JSONObject, model: String, requestId: String, created: Int64) -> String {
        let message = ollama["message"] as? JSONObject ?? [:]
        let calls = message["tool_calls"] as? [JSONObject] ?? []
        let content = message["content"] as? String ?? ""
        var out = "{\"id\":\(JSONValue.quote("chatcmpl-" + requestId.dropFirst(4))),\"object\":\"chat.completion\",\"created\":\(created),\"model\":\(JSONValue.quote(model)),\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
        out += calls.isEmpty || !content.isEmpty ? JSONValue.quote(content) : "null"
        if !calls.isEmpty { out += ",\"tool_calls\":" + JSONValue.text(toolCalls(calls, startIndex: 0, requestId: requestId)) }
        out += "},\"logprobs\":null,\"finish_reason\":\"\(finishReason(ollama["done_reason"] as? String, sawToolCalls: !calls.isEmpty))\"}],"
        out += "\"usage\":" + usage(prompt: JSONValue.int64(ollama["prompt_eval_count"]) ?? 0,
                                    completion: JSONValue.int64(ollama["eval_count"]) ?? 0) + "}"
        return out
    }

    /// Ollama `/api/embed` answer → OpenAI embeddings list.
    public static func embeddings(_ ollama: JSONObject, model: String) -> String {
        let vectors = ollama["embeddings"] as? [Any] ?? []
        let data = vectors.enumerated().map { i, v in
            "{\"object\":\"embedding\",\"index\":\(i),\"embedding\":\(JSONValue.text(v))}"
        }.joined(separator: ",")
        let tokens = JSONValue.int64(ollama["prompt_eval_count"]) ?? 0
        return "{\"object\":\"list\",\"data\":[\(data)],\"model\":\(JSONValue.quote(model)),\"usage\":{\"prompt_tokens\":\(tokens),\"total_tokens\":\(tokens)}}"
    }
}

/// Turns Ollama NDJSON chunk objects into OpenAI SSE events, one call per chunk. Pure state:
/// the id and `created` of the stream, whether the role was sent, tool-call numbering.
public struct OpenAIStreamEncoder: Sendable {
    let id: String
    let model: String
    let created: Int64
    let includeUsage: Bool
    private var sentRole = false
    private var toolCallCount = 0
    private(set) var finished = false

    public init(requestId: String, model: String, created: Int64, includeUsage: Bool) {
        self.id = "chatcmpl-" + requestId.dropFirst(4)
        self.model = model
        self.created = created
        self.includeUsage = includeUsage
    }

    private var prefix: String {
        "data: {\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"created\":\(created),\"model\":\(JSONValue.quote(model)),\"choices\":"
    }

    /// The SSE text for one Ollama chunk (possibly empty).
    public mutating func encode(_ chunk: JSONObject) -> String {
        if let error = chunk["error"] {
            finished = true
            return Self.errorEvent(error as? String ?? "upstream error")
        }
        let message = chunk["message"] as? JSONObject ?? [:]
        var out = ""
        var delta: [String] = []
        let isFirst = !sentRole
        if isFirst { delta.append("\"role\":\"assistant\"") }
        let content = message["content"] as? String ?? ""
        if !content.isEmpty || isFirst { delta.append("\"content\":" + JSONValue.quote(content)) }
        var hadToolCalls = false
        if let calls = message["tool_calls"] as? [JSONObject], !calls.isEmpty {
            delta.append("\"tool_calls\":" + JSONValue.text(
                OpenAIResponseTranslator.toolCalls(calls, startIndex: toolCallCount, requestId: id)))
            toolCallCount += calls.count
            hadToolCalls = true
        }
        if isFirst || !content.isEmpty || hadToolCalls {
            out += prefix + "[{\"index\":0,\"delta\":{" + delta.joined(separator: ",") + "},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
            sentRole = true
        }
        if chunk["done"] as? Bool == true {
            finished = true
            let reason = OpenAIResponseTranslator.finishReason(chunk["done_reason"] as? String, sawToolCalls: toolCallCount > 0)
            out += prefix + "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"\(reason)\"}]}\n\n"
            if includeUsage {
                out += prefix + "[],\"usage\":" + OpenAIResponseTranslator.usage(
                    prompt: JSONValue.int64(chunk["prompt_eval_count"]) ?? 0,
                    completion: JSONValue.int64(chunk["eval_count"]) ?? 0) + "}\n\n"
            }
            out += "data: [DONE]\n\n"
        }
        return out
    }

    /// The in-stream error event the OpenAI SDK raises on.
    public static func errorEvent(_ message: String, type: String = "server_error") -> String {
        "data: {\"error\":{\"message\":\(JSONValue.quote(message)),\"type\":\"\(type)\",\"param\":null,\"code\":null}}\n\n"
    }
}
