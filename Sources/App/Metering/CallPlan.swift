import Core
import JSONKit
import Providers

/// What a route asks of a metered call: what is being called and how large it can get, the
/// request to send, and how to read the answer. Routes build one and hand it to `MeteredCall`,
/// which decides everything about billing; a route never holds or settles.
struct CallPlan: Sendable {
    var endpoint: String
    var dialect: Dialect
    var provider: Provider
    /// The model, normalised: what is priced, recorded and sent upstream.
    var model: String
    var prompt: PromptSize
    /// The client's own output limit, if it set one.
    var requestedOutput: Int64?
    /// Whether the call produces output tokens (embeddings do not).
    var producesOutput: Bool
    /// Completions asked for (`n`): the output bound is held for each.
    var choices: Int64 = 1
    /// For OpenAI and Anthropic, the URL; for Ollama, the path (`/api/chat`) on whichever of the
    /// servers `OllamaPool` chooses for the model.
    var url: String
    var headers: [(String, String)] = []
    /// The body to send, given the output bound that was held (nil for calls without output).
    var body: @Sendable (_ outputBound: Int64?) -> JSON
    var answer: Answer

    /// How the upstream's 200 answer becomes the client's response.
    enum Answer: Sendable {
        /// Relayed chunk by chunk as it arrives.
        case stream(@Sendable (RelaySetup) -> any StreamRelay)
        /// A whole answer passed to the client as it arrives (any size, constant memory), its
        /// counts read on the way. `estimatesOutput`: without counts, its bytes are an estimate
        /// of its output (not for embeddings).
        case passThrough(UsageReader, estimatesOutput: Bool)
        /// A whole answer read, then translated into the client's dialect.
        case whole(UsageReader, @Sendable (JSONValue, RelaySetup) throws(GatewayError) -> WholeAnswer)
    }
}

/// Where an answer's token counts are: which top-level members to pick out of it, and how to
/// read them.
struct UsageReader: Sendable {
    var keys: [String]
    var read: @Sendable (JSONTopLevelScanner) -> ReportedUsage?

    /// Ollama's final object: `prompt_eval_count` and `eval_count` (a missing count is 0).
    static let ollama = UsageReader(keys: ["prompt_eval_count", "eval_count", "done"]) { scanner in
        guard scanner.value("done")?.bool == true || scanner.values["prompt_eval_count"] != nil else { return nil }
        return ReportedUsage(promptTokens: scanner.value("prompt_eval_count")?.int64 ?? 0,
                             completionTokens: scanner.value("eval_count")?.int64 ?? 0)
    }
    /// Ollama's `/api/embed`: `prompt_eval_count`.
    static let ollamaEmbed = UsageReader(keys: ["prompt_eval_count"]) { scanner in
        scanner.value("prompt_eval_count").map { ReportedUsage(promptTokens: $0.int64 ?? 0) }
    }
    /// OpenAI's `usage`.
    static let openAI = UsageReader(keys: ["usage"]) { $0.value("usage").map(ReportedUsage.openAI) }
    /// Anthropic's `usage`.
    static let anthropic = UsageReader(keys: ["usage"]) { $0.value("usage").map { ReportedUsage.anthropic($0) } }
    /// Nothing to read (Ollama's legacy `/api/embeddings`).
    static let none = UsageReader(keys: []) { _ in nil }
}

/// What a relay or an answer translator knows about its call.
struct RelaySetup: Sendable {
    var requestId: String
    var model: String
    /// Output units (chunks, deltas) the client may receive before the gateway ends the stream.
    var outputLimit: Int64
    /// The prompt count to report when the upstream reported none (what is billed then).
    var promptEstimate: Int64
}

/// A translated answer ready for the client.
struct WholeAnswer: Sendable {
    var body: [UInt8]
    var contentType: String
}
