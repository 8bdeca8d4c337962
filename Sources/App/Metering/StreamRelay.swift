import NIOCore
import Providers

/// Carries one upstream stream to the client in the client's dialect, metering it on the way,
/// and ends it properly when the delivered output reaches the held bound. Pure state, fed chunk
/// by chunk; it forwards only whole lines or events, so it can stop between any two.
protocol StreamRelay: Sendable {
    var contentType: String { get }
    /// Bytes to send before the first upstream chunk (e.g. Anthropic's `message_start`).
    mutating func start() -> [UInt8]
    /// The bytes to send the client for one upstream chunk (maybe none). Once the output limit
    /// is reached it forwards nothing more and `reachedLimit` is set.
    mutating func relay(_ chunk: ByteBuffer) -> [UInt8]
    /// Bytes still owed when the upstream body ends.
    mutating func finish() -> [UInt8]
    /// The dialect's ending for a length stop (Ollama `done_reason: "length"`, OpenAI
    /// `finish_reason: "length"`, Anthropic `stop_reason: "max_tokens"`).
    mutating func cutOff() -> [UInt8]
    /// The dialect's in-stream error, for failures after the response has started.
    func errorEvent(_ message: String) -> [UInt8]

    /// Output delivered so far (content chunks or deltas, and their text).
    var delivered: Delivered { get }
    var reachedLimit: Bool { get }
    /// Counts the upstream reported, if it got that far.
    var usage: ReportedUsage? { get }
    /// An error the upstream reported inside the stream.
    var errorMessage: String? { get }
    /// Whether the stream's terminal event came (Ollama's `done` chunk, `[DONE]`,
    /// `message_stop`): what follows it is the end of the response, held back until the settle
    /// is durable.
    var complete: Bool { get }
}

extension String {
    var bytes: [UInt8] { Array(utf8) }
}
