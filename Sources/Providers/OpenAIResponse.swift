import JSONKit

/// Ollama `/api/chat` answers → OpenAI Chat Completions answers (wire-formats §6.2, §6.5).
public enum OpenAIResponseTranslator {
    /// `stop` becomes `tool_calls` when the model called tools; `length` stays.
    static func finishReason(_ doneReason: String?, sawToolCalls: Bool) -> String {
        if sawToolCalls { return "tool_calls" }
        return doneReason == "length" ? "length" : "stop"
    }

    /// Ollama tool calls → OpenAI's, with arguments as a JSON string.
    static func toolCalls(_ calls: JSONValue, startIndex: Int, requestId: String) -> JSON {
        .array(calls.elements.enumerated().map { offset, call in
            let function = call["function"]
            let id = call["id"]?.string ?? "call_\(requestId.suffix(8))_\(startIndex + offset)"
            return ["index": .int(Int64(startIndex + offset)), "id": .string(id), "type": "function",
                    "function": ["name": .string(function?["name"]?.string ?? ""),
                                 "arguments": .string(function?["arguments"]?.rawText ?? "{}")]]
        })
    }

    static func usage(prompt: Int64, completion: Int64) -> JSON {
        ["prompt_tokens": .int(prompt), "completion_tokens": .int(completion), "total_tokens": .int(prompt + completion)]
    }

    /// A whole non-streaming answer.
    public static func completion(_ ollama: JSONValue, model: String, requestId: String, created: Int64) -> [UInt8] {
        let message = ollama["message"]
        let calls = message?["tool_calls"]
        let hasCalls = (calls?.count ?? 0) > 0
        let content = message?["content"]?.string ?? ""
        var reply: [JSON.Member] = [JSON.Member("role", "assistant"),
                                    JSON.Member("content", hasCalls && content.isEmpty ? .null : .string(content))]
        if let calls, hasCalls { reply.append(JSON.Member("tool_calls", toolCalls(calls, startIndex: 0, requestId: requestId))) }
        let final = OllamaFinal(ollama)
        let answer: JSON = [
            "id": .string("chatcmpl-" + requestId.dropFirst(4)), "object": "chat.completion", "created": .int(created),
            "model": .string(model),
            "choices": [["index": 0, "message": .object(reply), "logprobs": .null,
                         "finish_reason": .string(finishReason(final.doneReason, sawToolCalls: hasCalls))]],
            "usage": usage(prompt: final.promptEvalCount, completion: final.evalCount),
        ]
        return answer.bytes
    }

    /// Ollama `/api/embed` answer → OpenAI embeddings list.
    public static func embeddings(_ ollama: JSONValue, model: String) -> [UInt8] {
        let tokens = ollama["prompt_eval_count"]?.int64 ?? 0
        let answer: JSON = [
            "object": "list",
            "data": .array(ollama["embeddings"].elements.enumerated().map { i, vector in
                ["object": "embedding", "index": .int(Int64(i)), "embedding": vector.json]
            }),
            "model": .string(model), "usage": ["prompt_tokens": .int(tokens), "total_tokens": .int(tokens)],
        ]
        return answer.bytes
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
    public private(set) var finished = false

    public init(requestId: String, model: String, created: Int64, includeUsage: Bool) {
        self.id = "chatcmpl-" + requestId.dropFirst(4)
        self.model = model
        self.created = created
        self.includeUsage = includeUsage
    }

    private var prefix: String {
        "data: {\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"created\":\(created),\"model\":\(JSON.quoted(model)),\"choices\":"
    }

    /// The SSE text for one Ollama chunk (possibly empty).
    public mutating func encode(_ chunk: JSONValue) -> String {
        if let error = chunk["error"] {
            finished = true
            return Self.errorEvent(error.string ?? "upstream error")
        }
        let message = chunk["message"]
        var out = ""
        var delta: [String] = []
        let isFirst = !sentRole
        if isFirst { delta.append("\"role\":\"assistant\"") }
        let content = message?["content"]?.string ?? ""
        if !content.isEmpty || isFirst { delta.append("\"content\":" + JSON.quoted(content)) }
        var hadToolCalls = false
        if let calls = message?["tool_calls"], calls.count > 0 {
            delta.append("\"tool_calls\":" + OpenAIResponseTranslator.toolCalls(calls, startIndex: toolCallCount, requestId: id).text)
            toolCallCount += calls.count
            hadToolCalls = true
        }
        if isFirst || !content.isEmpty || hadToolCalls {
            out += prefix + "[{\"index\":0,\"delta\":{" + delta.joined(separator: ",") + "},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
            sentRole = true
        }
        if chunk["done"]?.bool == true {
            let final = OllamaFinal(chunk)
            out += finish(doneReason: final.doneReason, prompt: final.promptEvalCount, completion: final.evalCount)
        }
        return out
    }

    /// The finish chunk, the usage chunk when asked for, and `[DONE]`.
    public mutating func finish(doneReason: String?, prompt: Int64, completion: Int64) -> String {
        finished = true
        let reason = OpenAIResponseTranslator.finishReason(doneReason, sawToolCalls: toolCallCount > 0)
        var out = prefix + "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"\(reason)\"}]}\n\n"
        if includeUsage {
            out += prefix + "[],\"usage\":" + OpenAIResponseTranslator.usage(prompt: prompt, completion: completion).text + "}\n\n"
        }
        return out + "data: [DONE]\n\n"
    }

    /// The in-stream error event the OpenAI SDK raises on.
    public static func errorEvent(_ message: String, type: String = "server_error") -> String {
        "data: {\"error\":{\"message\":\(JSON.quoted(message)),\"type\":\"\(type)\",\"param\":null,\"code\":null}}\n\n"
    }
}
