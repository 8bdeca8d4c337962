import JSONKit
import NIOCore
import Providers

/// Ollama NDJSON translated, object by object, into another dialect's SSE.
struct TranslatingRelay<Encoder: DialectStreamEncoder>: StreamRelay {
    var encoder: Encoder
    let setup: RelaySetup
    private var splitter = NDJSONSplitter()
    private(set) var delivered = Delivered()
    private(set) var reachedLimit = false
    private(set) var usage: ReportedUsage?
    private(set) var errorMessage: String?
    var contentType: String { "text/event-stream" }
    var complete: Bool { usage != nil }

    init(encoder: Encoder, setup: RelaySetup) {
        self.encoder = encoder
        self.setup = setup
    }

    mutating func start() -> [UInt8] { encoder.start().bytes }

    mutating func relay(_ chunk: ByteBuffer) -> [UInt8] {
        translate(splitter.feed(chunk.readableBytesView))
    }

    mutating func finish() -> [UInt8] { translate(splitter.finish()) }

    private mutating func translate(_ objects: [JSONValue]) -> [UInt8] {
        var out = ""
        for object in objects where !reachedLimit {
            if let error = object["error"], !error.isNull {
                errorMessage = error.string ?? "upstream error"
            } else if object["done"]?.bool == true {
                delivered.textBytes += OllamaChunk.textBytes(object)
                usage = OllamaFinal(object).usage
            } else {
                delivered.textBytes += OllamaChunk.textBytes(object)
                delivered.units += 1
                if delivered.units >= setup.outputLimit { reachedLimit = true }
            }
            out += encoder.encode(object)
        }
        return out.bytes
    }

    mutating func cutOff() -> [UInt8] {
        encoder.finish(doneReason: "length", prompt: setup.promptEstimate, completion: delivered.units).bytes
    }

    func errorEvent(_ message: String) -> [UInt8] { Encoder.errorEvent(message).bytes }
}

/// The translators' stream encoders, as the relay uses them.
protocol DialectStreamEncoder: Sendable {
    mutating func start() -> String
    mutating func encode(_ chunk: JSONValue) -> String
    mutating func finish(doneReason: String?, prompt: Int64, completion: Int64) -> String
    static func errorEvent(_ message: String) -> String
}

extension OpenAIStreamEncoder: DialectStreamEncoder {
    mutating func start() -> String { "" }
    static func errorEvent(_ message: String) -> String { errorEvent(message, type: "server_error") }
}

extension AnthropicStreamEncoder: DialectStreamEncoder {
    mutating func finish(doneReason: String?, prompt: Int64, completion: Int64) -> String {
        finish(doneReason: doneReason, input: prompt, output: completion)
    }
    static func errorEvent(_ message: String) -> String { errorEvent(message, type: "api_error") }
}
