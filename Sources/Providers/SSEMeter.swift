import Foundation

/// Token counts as an upstream reported them.
public struct ReportedUsage: Sendable, Equatable {
    /// All prompt tokens, cached ones included.
    public var promptTokens: Int64 = 0
    public var completionTokens: Int64 = 0
    /// The part of `promptTokens` read from a cache.
    public var cachedTokens: Int64 = 0

    public init(promptTokens: Int64 = 0, completionTokens: Int64 = 0, cachedTokens: Int64 = 0) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cachedTokens = cachedTokens
    }

    /// OpenAI's `usage` object (cached tokens are inside `prompt_tokens`).
    public static func openAI(_ usage: JSONObject) -> ReportedUsage {
        ReportedUsage(promptTokens: JSONValue.int64(usage["prompt_tokens"]) ?? 0,
                      completionTokens: JSONValue.int64(usage["completion_tokens"]) ?? 0,
                      cachedTokens: JSONValue.int64((usage["prompt_tokens_details"] as? JSONObject)?["cached_tokens"]) ?? 0)
    }

    /// Anthropic's `usage` object: `input_tokens` is only the uncached part, so the prompt is
    /// input + cache writes + cache reads, and the cached part is the reads.
    public static func anthropic(_ usage: JSONObject, over previous: ReportedUsage? = nil) -> ReportedUsage {
        var result = previous ?? ReportedUsage()
        let input = JSONValue.int64(usage["input_tokens"]), write = JSONValue.int64(usage["cache_creation_input_tokens"])
        let read = JSONValue.int64(usage["cache_read_input_tokens"])
        if input != nil || write != nil || read != nil {
            result.cachedTokens = read ?? result.cachedTokens
            result.promptTokens = (input ?? 0) + (write ?? 0) + (read ?? 0)
        }
        if let output = JSONValue.int64(usage["output_tokens"]) { result.completionTokens = output }
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
            if line.hasPrefix("event:") { name = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
            else if line.hasPrefix("data:") {
                var value = line.dropFirst(5)
                if value.hasPrefix(" ") { value = value.dropFirst() }
                data.append(String(value))
            }
        }
        return (name, data.joined(separator: "\n"))
    }
}

/// Watches an OpenAI chat stream: reads the usage chunk (which the gateway always asks for) and
/// says which events to drop because the client did not ask for usage.
public struct OpenAIStreamMeter: Sendable {
    public private(set) var usage: ReportedUsage?
    public private(set) var errorMessage: String?
    public private(set) var sawDone = false
    public private(set) var contentEvents = 0
    let forwardUsageChunk: Bool

    public init(clientAskedForUsage: Bool) { self.forwardUsageChunk = clientAskedForUsage }

    /// Meters one event; returns whether it goes to the client.
    public mutating func observe(_ event: [UInt8]) -> Bool {
        let (_, data) = SSESplitter.parse(event)
        if data == "[DONE]" {
            sawDone = true
            return true
        }
        guard data.contains("\"usage\"") || data.contains("\"error\"") else {
            contentEvents += 1
            return true
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? JSONObject else { return true }
        if let error = object["error"] as? JSONObject {
            errorMessage = error["message"] as? String ?? "upstream error"
            return true
        }
        if let usage = object["usage"] as? JSONObject {
            self.usage = .openAI(usage)
            if (object["choices"] as? [Any])?.isEmpty ?? true { return forwardUsageChunk }
        }
        contentEvents += 1
        return true
    }
}

/// Watches an Anthropic message stream for usage (`message_start`, then cumulative
/// `message_delta`), the end (`message_stop`) and errors. Every event is forwarded unchanged.
public struct AnthropicStreamMeter: Sendable {
    public private(set) var usage: ReportedUsage?
    public private(set) var errorMessage: String?
    public private(set) var sawStop = false
    public private(set) var contentEvents = 0

    public init() {}

    public mutating func observe(_ event: [UInt8]) {
        let (name, data) = SSESplitter.parse(event)
        switch name {
        case "message_start":
            if let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? JSONObject,
               let usage = (object["message"] as? JSONObject)?["usage"] as? JSONObject {
                self.usage = .anthropic(usage)
            }
        case "message_delta":
            if let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? JSONObject,
               let usage = object["usage"] as? JSONObject {
                self.usage = .anthropic(usage, over: self.usage)
            }
        case "message_stop": sawStop = true
        case "error":
            let object = (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? JSONObject
            errorMessage = ((object?["error"] as? JSONObject)?["message"] as? String) ?? "upstream error"
        case "content_block_delta": contentEvents += 1
        default: break
        }
    }
}
