import Core
import JSONKit
import NIOCore
import Providers

/// OpenAI SSE from OpenAI to an OpenAI client: events pass through, except the usage chunk the
/// gateway asked for on the client's behalf.
struct OpenAIPassRelay: StreamRelay {
    let setup: RelaySetup
    let choices: Int64
    private var splitter = SSESplitter()
    private var meter: OpenAIStreamMeter
    private(set) var reachedLimit = false
    var contentType: String { "text/event-stream" }

    init(clientAskedForUsage: Bool, choices: Int64, setup: RelaySetup) {
        self.meter = OpenAIStreamMeter(clientAskedForUsage: clientAskedForUsage)
        self.choices = choices
        self.setup = setup
    }

    var delivered: Delivered { Delivered(units: Int64(meter.contentEvents), textBytes: meter.contentBytes) }
    var usage: ReportedUsage? { meter.usage }
    var errorMessage: String? { meter.errorMessage }
    var complete: Bool { meter.sawDone }

    mutating func start() -> [UInt8] { [] }

    mutating func relay(_ chunk: ByteBuffer) -> [UInt8] {
        var out: [UInt8] = []
        for event in splitter.feed(chunk.readableBytesView) where !reachedLimit {
            if meter.observe(event) { out.append(contentsOf: event) }
            // The bound is per choice; `n` choices share the stream.
            if delivered.units >= setup.outputLimit * choices { reachedLimit = true }
        }
        return out
    }

    mutating func finish() -> [UInt8] { reachedLimit ? [] : splitter.rest() }

    mutating func cutOff() -> [UInt8] {
        let head = meter.head ?? ("chatcmpl-" + setup.requestId.dropFirst(4), nowMicros() / 1_000_000, setup.model)
        func chunk(_ choices: JSON, usage: JSON? = nil) -> String {
            var object: JSON = ["id": .string(head.id), "object": "chat.completion.chunk", "created": .int(head.created),
                                "model": .string(head.model), "choices": choices]
            if let usage { object.set("usage", usage) }
            return "data: " + object.text + "\n\n"
        }
        var out = chunk(.array((0..<choices).map { ["index": .int($0), "delta": [:], "logprobs": .null, "finish_reason": "length"] }))
        if meter.clientAskedForUsage {
            let prompt = meter.usage?.promptTokens ?? setup.promptEstimate
            out += chunk([], usage: ["prompt_tokens": .int(prompt), "completion_tokens": .int(delivered.units),
                                     "total_tokens": .int(prompt + delivered.units)])
        }
        return (out + "data: [DONE]\n\n").bytes
    }

    func errorEvent(_ message: String) -> [UInt8] { OpenAIStreamEncoder.errorEvent(message, type: "server_error").bytes }
}

/// Anthropic SSE from Anthropic to an Anthropic client: every event passes through unchanged.
struct AnthropicPassRelay: StreamRelay {
    let setup: RelaySetup
    private var splitter = SSESplitter()
    private var meter = AnthropicStreamMeter()
    private(set) var reachedLimit = false
    var contentType: String { "text/event-stream" }

    init(setup: RelaySetup) {
        self.setup = setup
    }

    var delivered: Delivered { Delivered(units: Int64(meter.contentEvents), textBytes: meter.contentBytes) }
    var usage: ReportedUsage? { meter.usage }
    var errorMessage: String? { meter.errorMessage }
    var complete: Bool { meter.sawStop }

    mutating func start() -> [UInt8] { [] }

    mutating func relay(_ chunk: ByteBuffer) -> [UInt8] {
        var out: [UInt8] = []
        for event in splitter.feed(chunk.readableBytesView) where !reachedLimit {
            meter.observe(event)
            out.append(contentsOf: event)
            if delivered.units >= setup.outputLimit { reachedLimit = true }
        }
        return out
    }

    mutating func finish() -> [UInt8] { reachedLimit ? [] : splitter.rest() }

    mutating func cutOff() -> [UInt8] {
        func event(_ name: String, _ data: JSON) -> String { "event: \(name)\ndata: \(data.text)\n\n" }
        var out = ""
        if let open = meter.openBlock { out += event("content_block_stop", ["type": "content_block_stop", "index": .int(open)]) }
        out += event("message_delta", ["type": "message_delta", "delta": ["stop_reason": "max_tokens", "stop_sequence": .null],
                                       "usage": ["output_tokens": .int(delivered.units)]])
        out += event("message_stop", ["type": "message_stop"])
        return out.bytes
    }

    func errorEvent(_ message: String) -> [UInt8] { AnthropicStreamEncoder.errorEvent(message, type: "api_error").bytes }
}
