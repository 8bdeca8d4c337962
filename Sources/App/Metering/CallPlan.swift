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
    var url: String
    var headers: [(String, String)] = []
    /// The body to send, given the output bound that was held (nil for calls without output).
    var body: @Sendable (_ outputBound: Int64?) -> JSON
    var answer: Answer

    /// How the upstream's 200 answer becomes the client's response.
    enum Answer: Sendable {
        /// Relayed chunk by chunk as it arrives.
        case stream(@Sendable (RelaySetup) -> any StreamRelay)
        /// Read whole, then translated (or passed on) at once.
        case whole(@Sendable (JSONValue, RelaySetup) throws(GatewayError) -> WholeAnswer)
    }
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

/// A whole answer ready for the client, with what billing needs from it.
struct WholeAnswer: Sendable {
    var body: [UInt8]
    var contentType: String
    /// The counts the upstream reported (nil: none, so they are estimated).
    var usage: ReportedUsage?
    /// Output delivered, for an estimate when `usage` is nil.
    var delivered: Int64 = 0
}
