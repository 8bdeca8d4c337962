import AsyncHTTPClient
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Opens `count` streams at once (`repeats` times in a row) and times each one: first byte (the response head), first
/// token, and every gap between chunks that carry tokens. A gap over twice the upstream's pace
/// is a stall.
struct StreamProbe {
    let options: DriverOptions
    let client: HTTPClient

    struct Tally {
        var ttfb = newHistogram()
        var ttft = newHistogram()
        var gaps = newHistogram()
        var total = newHistogram()
        var ok = 0
        var failed = 0
        var stalls = 0
        var tokenChunks = 0
    }

    func run() async throws -> [String: Any] {
        let tally = NIOLockedValueBox(Tally())
        let stallMicros = UInt64(2 * options.paceMillis * 1000)
        let clock = ContinuousClock()
        // With repeats, the first round only warms connections up and is not recorded.
        let rounds = options.repeats > 1 ? options.repeats + 1 : 1
        for round in 0..<rounds {
        let record = rounds == 1 || round > 0
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<options.count {
                let request = options.request()
                group.addTask {
                    let started = clock.now
                    do {
                        let response = try await client.execute(request, timeout: .seconds(120))
                        let head = started.micros(to: clock.now)
                        guard response.status == .ok else {
                            _ = try? await response.body.collect(upTo: 1 << 20)
                            tally.withLockedValue { $0.failed += 1 }
                            return
                        }
                        var splitter = LineScanner()
                        var firstToken: UInt64?
                        var lastToken: ContinuousClock.Instant?
                        var gaps: [UInt64] = []
                        for try await buffer in response.body {
                            let now = clock.now
                            guard splitter.feed(buffer) > 0 else { continue }
                            if firstToken == nil { firstToken = started.micros(to: now) }
                            if let lastToken { gaps.append(lastToken.micros(to: now)) }
                            lastToken = now
                        }
                        let total = started.micros(to: clock.now)
                        guard record else { return }
                        tally.withLockedValue { t in
                            _ = t.ttfb.record(head)
                            if let firstToken { _ = t.ttft.record(firstToken) }
                            for gap in gaps {
                                _ = t.gaps.record(gap)
                                if gap > stallMicros { t.stalls += 1 }
                            }
                            _ = t.total.record(total)
                            t.tokenChunks += gaps.count + (firstToken == nil ? 0 : 1)
                            if firstToken == nil { t.failed += 1 } else { t.ok += 1 }
                        }
                    } catch {
                        tally.withLockedValue { $0.failed += 1 }
                    }
                }
            }
        }
        }
        return tally.withLockedValue { t in
            var out: [String: Any] = ["mode": "streams", "streams": options.count, "repeats": options.repeats, "ok": t.ok, "failed": t.failed,
                                      "stalls": t.stalls, "token_chunks": t.tokenChunks, "pace_ms": options.paceMillis]
            for (key, value) in summary(t.ttfb, prefix: "ttfb") { out[key] = value }
            for (key, value) in summary(t.ttft, prefix: "ttft") { out[key] = value }
            for (key, value) in summary(t.gaps, prefix: "gap") { out[key] = value }
            for (key, value) in summary(t.total, prefix: "stream") { out[key] = value }
            return out
        }
    }
}

/// Counts the complete lines (NDJSON objects or SSE `data:` lines) in a byte stream that carry
/// generated text, across buffer boundaries.
struct LineScanner {
    private var partial: [UInt8] = []

    /// Feeds bytes; returns how many completed lines carried a token.
    mutating func feed(_ buffer: ByteBuffer) -> Int {
        var tokens = 0
        for byte in buffer.readableBytesView {
            if byte == UInt8(ascii: "\n") {
                if Self.carriesToken(partial) { tokens += 1 }
                partial.removeAll(keepingCapacity: true)
            } else {
                partial.append(byte)
            }
        }
        return tokens
    }

    /// A non-empty `"content":"…"`, `"response":"…"` or `"text":"…"` string (Ollama chat,
    /// Ollama generate, OpenAI deltas, Anthropic text deltas).
    static func carriesToken(_ line: [UInt8]) -> Bool {
        for key in keys {
            var i = 0
            while i + key.count < line.count {
                if line[i..<(i + key.count)].elementsEqual(key) {
                    return line[i + key.count] != UInt8(ascii: "\"")
                }
                i += 1
            }
        }
        return false
    }

    static let keys: [[UInt8]] = [Array(#""content":""#.utf8), Array(#""response":""#.utf8), Array(#""text":""#.utf8)]
}
