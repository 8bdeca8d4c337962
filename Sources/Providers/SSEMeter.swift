import Core
import JSONKit

/// Token counts as an upstream reported them.
public struct ReportedUsage: Sendable, Equatable {
    /// All prompt tokens, cached ones included.
    public var promptTokens: Int64 = 0
    public var completionTokens: Int64 = 0
    /// The part of `promptTokens` read from a cache.
    public var cachedTokens: Int64 = 0
    /// The part of `promptTokens` written to a cache (Anthropic bills it above the input price).
    public var cacheWrites: CacheWrites = .none

    public init(promptTokens: Int64 = 0, completionTokens: Int64 = 0, cachedTokens: Int64 = 0,
                cacheWrites: CacheWrites = .none) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
        self.cacheWrites = cacheWrites
    }

    /// OpenAI's `usage` object (cached tokens are inside `prompt_tokens`).
    public static func openAI(_ usage: JSONValue) -> ReportedUsage {
        ReportedUsage(promptTokens: usage["prompt_tokens"]?.int64 ?? 0,
                      completionTokens: usage["completion_tokens"]?.int64 ?? 0,
                      cachedTokens: usage["prompt_tokens_details"]?["cached_tokens"]?.int64 ?? 0)
    }

    /// Anthropic's `usage` object: `input_tokens` is only the uncached part, so the prompt is
    /// input + cache writes + cache reads, and the cached part is the reads.
    public static func anthropic(_ usage: JSONValue, over previous: ReportedUsage? = nil) -> ReportedUsage {
        var result = previous ?? ReportedUsage()
        let input = usage["input_tokens"]?.int64, write = usage["cache_creation_input_tokens"]?.int64
        let read = usage["cache_read_input_tokens"]?.int64
        if input != nil || write != nil || read != nil {
            result.cachedTokens = read ?? result.cachedTokens
            result.promptTokens = (input ?? 0) + (write ?? 0) + (read ?? 0)
            // Writes by lifetime when Anthropic says; otherwise all at the 5-minute rate.
            let oneHour = min(write ?? 0, usage["cache_creation"]?["ephemeral_1h_input_tokens"]?.int64 ?? 0)
            result.cacheWrites = CacheWrites(fiveMinute: (write ?? 0) - oneHour, oneHour: oneHour)
        }
        if let output = usage["output_tokens"]?.int64 { result.completionTokens = output }
        return result
    }
}

/// Splits a server-sent-event byte stream into whole events, whatever the chunking.
public struct SSESplitter: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// Appends bytes and returns the complete events (each with its trailing blank line).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [[UInt8]] {
        pending.append(contentsOf: bytes)
        var events: [[UInt8]] = []
        var start = 0, i = 0
        while i + 1 < pending.count {
            if pending[i] == 0x0A && pending[i + 1] == 0x0A {
                events.append(Array(pending[start...(i + 1)]))
                start = i + 2
                i += 2
            } else if i + 3 < pending.count, pending[i] == 0x0D, pending[i + 1] == 0x0A, pending[i + 2] == 0x0D, pending[i + 3] == 0x0A {
                events.append(Array(pending[start...(i + 3)]))
                start = i + 4
                i += 4
            } else {
                i += 1
            }
        }
        pending.removeFirst(start)
        return events
    }

    /// Whatever is left when the stream ends (an unterminated event).
    public mutating func rest() -> [UInt8] {
        defer { pending = [] }
        return pending
    }

    /// The `event:` name and joined `data:` payload of one event.
    public static func parse(_ event: [UInt8]) -> (name: String?, data: String) {
        var name: String?
        var data: [String] = []
        for line in String(decoding: event, as: UTF8.self).split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }) {
            if line.hasPrefix("event:") { name = String(line.dropFirst(6).drop { $0 == " " }) }
            else if line.hasPrefix("data:") {
                var value = line.dropFirst(5)
                if value.hasPrefix(" ") { value = value.dropFirst() }
                data.append(String(value))
            }
        }
        return (name, data.joined(separator: "\n"))
    }

    static func object(_ data: String) -> JSONValue? {
        (try? JSONDocument.parse(data))?.root
    }
}

/// Watches an OpenAI chat stream: reads the usage chunk (which the gateway always asks for),
/// counts content deltas, remembers the stream's id for a cut-off, and says which events to
/// drop because the client did not ask for usage.
public struct OpenAIStreamMeter: Sendable {
    public private(set) var usage: ReportedUsage?
    public private(set) var errorMessage: String?
    public private(set) var sawDone = false
    /// Deltas that carried content (text, a refusal, reasoning or tool calls): at least a token each.
    public private(set) var contentEvents = 0
    /// The bytes of that content.
    public private(set) var contentBytes: Int64 = 0
    /// The first chunk's `id`, `created` and `model`, to write a closing chunk in its style.
    public private(set) var head: (id: String, created: Int64, model: String)?
    let forwardUsageChunk: Bool

    public init(clientAskedForUsage: Bool) { self.forwardUsageChunk = clientAskedForUsage }

    public var clientAskedForUsage: Bool { forwardUsageChunk }

    /// Meters one event; returns whether it goes to the client.
    public mutating func observe(_ event: [UInt8]) -> Bool {
        let (_, data) = SSESplitter.parse(event)
        if data == "[DONE]" {
            sawDone = true
            return true
        }
        guard let object = SSESplitter.object(data) else { return true }
        if let error = object["error"], !error.isNull {
            errorMessage = error["message"]?.string ?? "upstream error"
            return true
        }
        if head == nil, let id = object["id"]?.string {
            head = (id, object["created"]?.int64 ?? 0, object["model"]?.string ?? "")
        }
        for choice in object["choices"].elements {
            guard let delta = choice["delta"] else { continue }
            var bytes = 0
            for name in ["content", "refusal", "reasoning", "reasoning_content"] {
                if let text = delta[name], text.kind == .string { bytes += text.rawBytes.count - 2 }
            }
            if let calls = delta["tool_calls"], calls.count > 0 { bytes += calls.rawBytes.count }
            if bytes > 0 {
                contentEvents += 1
                contentBytes += Int64(bytes)
            }
        }
        if let usage = object["usage"], usage.kind == .object {
            self.usage = .openAI(usage)
            if object["choices"]?.count ?? 0 == 0 { return forwardUsageChunk }
        }
        return true
    }
}

/// Watches an Anthropic message stream for usage (`message_start`, then cumulative
/// `message_delta`), the end (`message_stop`), errors, content deltas and the open content
/// block. Every event is forwarded unchanged.
public struct AnthropicStreamMeter: Sendable {
    public private(set) var usage: ReportedUsage?
    public private(set) var errorMessage: String?
    public private(set) var sawStop = false
    public private(set) var contentEvents = 0
    /// The bytes of text, thinking and tool input the deltas carried.
    public private(set) var contentBytes: Int64 = 0
    /// The index of the content block started and not yet stopped.
    public private(set) var openBlock: Int64?
    public private(set) var sawMessageDelta = false

    public init() {}

    public mutating func observe(_ event: [UInt8]) {
        let (name, data) = SSESplitter.parse(event)
        switch name {
        case "message_start":
            if let usage = SSESplitter.object(data)?["message"]?["usage"] { self.usage = .anthropic(usage) }
        case "message_delta":
            sawMessageDelta = true
            if let usage = SSESplitter.object(data)?["usage"] { self.usage = .anthropic(usage, over: self.usage) }
        case "message_stop": sawStop = true
        case "error":
            errorMessage = SSESplitter.object(data)?["error"]?["message"]?.string ?? "upstream error"
        case "content_block_start": openBlock = SSESplitter.object(data)?["index"]?.int64
        case "content_block_stop": openBlock = nil
        case "content_block_delta":
            contentEvents += 1
            let delta = SSESplitter.object(data)?["delta"]
            for name in ["text", "thinking", "partial_json"] {
                if let text = delta?[name], text.kind == .string { contentBytes += Int64(text.rawBytes.count - 2) }
            }
        default: break
        }
    }
}
