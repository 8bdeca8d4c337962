import JSONKit

/// Ollama `/api/chat` answers → Anthropic Messages answers (wire-formats §6.4, §6.5).
public enum AnthropicResponseTranslator {
    /// Tool calls → `tool_use`; `length` → `max_tokens`; a stop sequence the text ended at →
    /// `stop_sequence`; otherwise `end_turn`.
    ///
    /// Ollama strips a matched stop sequence and reports `stop` either way, so `stop_sequence`
    /// cannot be told apart and is reported as `end_turn`.
    static func stopReason(_ doneReason: String?, sawToolUse: Bool) -> String {
        if sawToolUse { return "tool_use" }
        return doneReason == "length" ? "max_tokens" : "end_turn"
    }

    static func messageId(_ requestId: String) -> String { "msg_" + requestId.dropFirst(4) }

    /// A whole non-streaming answer.
    public static func message(_ ollama: JSONValue, model: String, requestId: String) -> [UInt8] {
        let message = ollama["message"]
        var blocks: [JSON] = []
        if let thinking = message?["thinking"]?.string, !thinking.isEmpty {
            blocks.append(["type": "thinking", "thinking": .string(thinking), "signature": ""])
        }
        let text = message?["content"]?.string ?? ""
        if !text.isEmpty { blocks.append(["type": "text", "text": .string(text)]) }
        let calls = message?["tool_calls"]
        for (i, call) in calls.elements.enumerated() {
            let function = call["function"]
            let id = call["id"]?.string ?? "toolu_\(requestId.suffix(12))_\(i)"
            blocks.append(["type": "tool_use", "id": .string(id), "name": .string(function?["name"]?.string ?? ""),
                           "input": function?["arguments"]?.json ?? .object([])])
        }
        let final = OllamaFinal(ollama)
        let answer: JSON = [
            "id": .string(messageId(requestId)), "type": "message", "role": "assistant", "model": .string(model),
            "content": .array(blocks),
            "stop_reason": .string(stopReason(final.doneReason, sawToolUse: (calls?.count ?? 0) > 0)), "stop_sequence": .null,
            "usage": ["input_tokens": .int(final.promptEvalCount), "output_tokens": .int(final.evalCount)],
        ]
        return answer.bytes
    }
}

/// Turns Ollama NDJSON chunk objects into Anthropic SSE events. Pure state: which content block
/// is open and its index, whether the message started, whether tools were used.
public struct AnthropicStreamEncoder: Sendable {
    enum Block: Equatable { case none, text, thinking }

    let id: String
    let model: String
    let inputEstimate: Int64
    private var started = false
    private var open = Block.none
    private var index = 0
    private var sawToolUse = false
    public private(set) var finished = false

    public init(requestId: String, model: String, inputEstimate: Int64) {
        self.id = AnthropicResponseTranslator.messageId(requestId)
        self.model = model
        self.inputEstimate = inputEstimate
    }

    static func event(_ name: String, _ data: String) -> String { "event: \(name)\ndata: \(data)\n\n" }

    /// `message_start` and a `ping`, sent before the first chunk arrives.
    public mutating func start() -> String {
        guard !started else { return "" }
        started = true
        return Self.event("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"\(id)\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\(JSON.quoted(model)),\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":\(inputEstimate),\"output_tokens\":0}}}")
            + Self.event("ping", "{\"type\":\"ping\"}")
    }

    private mutating func close() -> String {
        guard open != .none else { return "" }
        open = .none
        defer { index += 1 }
        return Self.event("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":\(index)}")
    }

    private mutating func ensure(_ block: Block) -> String {
        guard open != block else { return "" }
        var out = close()
        open = block
        let start = block == .text ? "{\"type\":\"text\",\"text\":\"\"}" : "{\"type\":\"thinking\",\"thinking\":\"\"}"
        out += Self.event("content_block_start", "{\"type\":\"content_block_start\",\"index\":\(index),\"content_block\":\(start)}")
        return out
    }

    /// The SSE text for one Ollama chunk.
    public mutating func encode(_ chunk: JSONValue) -> String {
        var out = start()
        if let error = chunk["error"] {
            finished = true
            return out + Self.errorEvent(error.string ?? "upstream error")
        }
        let message = chunk["message"]
        if let thinking = message?["thinking"]?.string, !thinking.isEmpty {
            out += ensure(.thinking)
            out += Self.event("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":\(index),\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\(JSON.quoted(thinking))}}")
        }
        if let text = message?["content"]?.string, !text.isEmpty {
            out += ensure(.text)
            out += Self.event("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":\(index),\"delta\":{\"type\":\"text_delta\",\"text\":\(JSON.quoted(text))}}")
        }
        for call in (message?["tool_calls"]).elements {
            out += close()
            sawToolUse = true
            let function = call["function"]
            let toolId = call["id"]?.string ?? "toolu_\(id.suffix(12))_\(index)"
            out += Self.event("content_block_start", "{\"type\":\"content_block_start\",\"index\":\(index),\"content_block\":{\"type\":\"tool_use\",\"id\":\(JSON.quoted(toolId)),\"name\":\(JSON.quoted(function?["name"]?.string ?? "")),\"input\":{}}}")
            out += Self.event("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":\(index),\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\(JSON.quoted(function?["arguments"]?.rawText ?? "{}"))}}")
            out += Self.event("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":\(index)}")
            index += 1
        }
        if chunk["done"]?.bool == true {
            let final = OllamaFinal(chunk)
            out += finish(doneReason: final.doneReason, input: final.promptEvalCount, output: final.evalCount)
        }
        return out
    }

    /// Closes the open block and ends the message with its stop reason and usage.
    public mutating func finish(doneReason: String?, input: Int64, output: Int64) -> String {
        finished = true
        var out = start() + close()
        let reason = AnthropicResponseTranslator.stopReason(doneReason, sawToolUse: sawToolUse)
        out += Self.event("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"\(reason)\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":\(input),\"output_tokens\":\(output)}}")
        out += Self.event("message_stop", "{\"type\":\"message_stop\"}")
        return out
    }

    /// The in-stream error event the Anthropic SDK raises on.
    public static func errorEvent(_ message: String, type: String = "api_error") -> String {
        event("error", "{\"type\":\"error\",\"error\":{\"type\":\"\(type)\",\"message\":\(JSON.quoted(message))}}")
    }
}
