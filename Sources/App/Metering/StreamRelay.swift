import Foundation
import NIOCore
import Providers

/// What a relay learned from a stream by its end.
struct StreamReport: Sendable {
    /// Counts the upstream reported, if it got that far.
    var usage: ReportedUsage?
    /// Content chunks or deltas delivered (about one token each), for estimates on cancel.
    var contentChunks: Int
    /// An error the upstream reported inside the stream.
    var errorMessage: String?
    /// Whether the stream ended properly (final chunk, `[DONE]` or `message_stop`).
    var complete: Bool
}

/// Carries one upstream stream to the client in the client's dialect, metering it on the way.
/// Pure state, fed chunk by chunk; never holds more than a partial line or event.
protocol StreamRelay: Sendable {
    var contentType: String { get }
    /// Bytes to send before the first upstream chunk (e.g. Anthropic's `message_start`).
    mutating func start() -> String
    /// The bytes to send the client for one upstream chunk (may be empty).
    mutating func relay(_ chunk: ByteBuffer) -> ByteBuffer
    /// Bytes still owed when the upstream body ends.
    mutating func finish() -> String
    var report: StreamReport { get }
    /// The dialect's in-stream error, for failures after the response has started.
    func errorEvent(_ message: String) -> String
}

/// Ollama NDJSON to an Ollama client: bytes pass through untouched, only scanned.
struct OllamaNativeRelay: StreamRelay {
    var meter = OllamaStreamMeter()
    let contentType: String

    mutating func start() -> String { "" }
    mutating func relay(_ chunk: ByteBuffer) -> ByteBuffer {
        meter.consume(chunk)
        return chunk
    }
    mutating func finish() -> String {
        meter.finish()
        return ""
    }
    var report: StreamReport {
        StreamReport(usage: meter.final.map { ReportedUsage(promptTokens: $0.promptEvalCount, completionTokens: $0.evalCount) },
                     contentChunks: meter.chunks, errorMessage: meter.errorMessage, complete: meter.final != nil)
    }
    func errorEvent(_ message: String) -> String { "{\"error\":\(JSONText.quote(message))}\n" }
}

/// Ollama NDJSON translated, object by object, into another dialect's SSE.
struct TranslatingRelay<Encoder: DialectStreamEncoder>: StreamRelay {
    var encoder: Encoder
    var splitter = NDJSONSplitter()
    var final: ReportedUsage?
    var chunks = 0
    var errorMessage: String?
    var contentType: String { "text/event-stream" }

    init(encoder: Encoder) { self.encoder = encoder }

    mutating func start() -> String { encoder.start() }

    mutating func relay(_ chunk: ByteBuffer) -> ByteBuffer {
        ByteBuffer(string: translate(splitter.feed(chunk.readableBytesView)))
    }

    mutating func finish() -> String { translate(splitter.finish()) }

    private mutating func translate(_ objects: [JSONObject]) -> String {
        var out = ""
        for object in objects {
            if let error = object["error"] {
                errorMessage = error as? String ?? "upstream error"
            } else if object["done"] as? Bool == true {
                final = ReportedUsage(promptTokens: OllamaFinal(object).promptEvalCount, completionTokens: OllamaFinal(object).evalCount)
            } else {
                chunks += 1
            }
            out += encoder.encode(object)
        }
        return out
    }

    var report: StreamReport {
        StreamReport(usage: final, contentChunks: chunks, errorMessage: errorMessage, complete: final != nil)
    }
    func errorEvent(_ message: String) -> String { Encoder.errorEvent(message) }
}

/// The translators' stream encoders, as the relay uses them.
protocol DialectStreamEncoder: Sendable {
    mutating func start() -> String
    mutating func encode(_ chunk: JSONObject) -> String
    static func errorEvent(_ message: String) -> String
}

extension OpenAIStreamEncoder: DialectStreamEncoder {
    mutating func start() -> String { "" }
    static func errorEvent(_ message: String) -> String { errorEvent(message, type: "server_error") }
}

extension AnthropicStreamEncoder: DialectStreamEncoder {
    static func errorEvent(_ message: String) -> String { errorEvent(message, type: "api_error") }
}

/// OpenAI SSE from OpenAI to an OpenAI client: events pass through, except the usage chunk the
/// gateway asked for on the client's behalf.
struct OpenAIPassRelay: StreamRelay {
    var splitter = SSESplitter()
    var meter: OpenAIStreamMeter
    var contentType: String { "text/event-stream" }

    init(clientAskedForUsage: Bool) { meter = OpenAIStreamMeter(clientAskedForUsage: clientAskedForUsage) }

    mutating func start() -> String { "" }
    mutating func relay(_ chunk: ByteBuffer) -> ByteBuffer {
        var out = ByteBuffer()
        for event in splitter.feed(chunk.readableBytesView) where meter.observe(event) {
            out.writeBytes(event)
        }
        return out
    }
    mutating func finish() -> String { String(decoding: splitter.rest(), as: UTF8.self) }
    var report: StreamReport {
        StreamReport(usage: meter.usage, contentChunks: meter.contentEvents, errorMessage: meter.errorMessage,
                     complete: meter.sawDone || meter.usage != nil)
    }
    func errorEvent(_ message: String) -> String { OpenAIStreamEncoder.errorEvent(message, type: "server_error") }
}

/// Anthropic SSE from Anthropic to an Anthropic client: every event passes through unchanged.
struct AnthropicPassRelay: StreamRelay {
    var splitter = SSESplitter()
    var meter = AnthropicStreamMeter()
    var contentType: String { "text/event-stream" }

    mutating func start() -> String { "" }
    mutating func relay(_ chunk: ByteBuffer) -> ByteBuffer {
        for event in splitter.feed(chunk.readableBytesView) { meter.observe(event) }
        return chunk
    }
    mutating func finish() -> String { "" }
    var report: StreamReport {
        StreamReport(usage: meter.usage, contentChunks: meter.contentEvents, errorMessage: meter.errorMessage,
                     complete: meter.sawStop)
    }
    func errorEvent(_ message: String) -> String { AnthropicStreamEncoder.errorEvent(message, type: "api_error") }
}
