import JSONKit

/// Token counts and the end state of an Ollama response, read from its final `done` object.
///
/// Ollama leaves zero counts out of the JSON (`omitempty`), so a missing count reads as 0.
public struct OllamaFinal: Sendable, Equatable {
    public var promptEvalCount: Int64
    public var evalCount: Int64
    public var doneReason: String?

    public init(promptEvalCount: Int64 = 0, evalCount: Int64 = 0, doneReason: String? = nil) {
        self.promptEvalCount = promptEvalCount
        self.evalCount = evalCount
        self.doneReason = doneReason
    }

    /// Reads the counts from a final object.
    public init(_ object: JSONValue) {
        self.promptEvalCount = object["prompt_eval_count"]?.int64 ?? 0
        self.evalCount = object["eval_count"]?.int64 ?? 0
        self.doneReason = object["done_reason"]?.string
    }

    /// The counts as usage.
    public var usage: ReportedUsage { ReportedUsage(promptTokens: promptEvalCount, completionTokens: evalCount) }
}

/// What a streamed Ollama chunk delivers.
public enum OllamaChunk {
    /// The bytes of text in a chunk: its content or response, its thinking, and its tool calls
    /// (as JSON), for estimating the tokens of a stream that ended early.
    public static func textBytes(_ chunk: JSONValue) -> Int64 {
        let message = chunk["message"]
        var bytes = 0
        for part in [message?["content"], message?["thinking"], chunk["response"], chunk["thinking"]] {
            if let part, part.kind == .string { bytes += part.rawBytes.count - 2 }
        }
        if let calls = message?["tool_calls"] { bytes += calls.rawBytes.count }
        return Int64(bytes)
    }
}
