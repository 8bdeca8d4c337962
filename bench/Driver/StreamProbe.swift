import AsyncHTTPClient
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Opens `count` streams at once (`repeats` times in a row) and times each one: first byte (the response head), first
/// token, and every gap between chunks that carry tokens. A gap over twice the upstream's pace
/// is a stall.
///
/// Gaps mix the path's delays with the mock's own pacing, which slips when the mock and the
/// driver share a busy core. Chunks stamped by the mock (`lmsvr-fake-upstream --stamp-chunks`:
/// the text is `@` and CLOCK_MONOTONIC nanoseconds at the write) are also timed in transit,
/// from the mock's write to this driver's read: the path alone. A chunk longer in transit than
/// twice the pace is delayed; what a gateway adds is its rung's transit beyond R0's.
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
        /// Why streams failed: the status and the start of the body, or the client's error.
        var reasons: [String: Int] = [:]
        var stalls = 0
        var tokenChunks = 0
        var transit = newHistogram()
        var delayed = 0
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
                            let body = (try? await response.body.collect(upTo: 1 << 20)).map { String(buffer: $0) } ?? ""
                            let reason = "\(response.status.code) \(body.prefix(160))"
                            tally.withLockedValue { $0.failed += 1; $0.reasons[reason, default: 0] += 1 }
                            return
                        }
                        var splitter = LineScanner()
                        var firstToken: UInt64?
                        var lastToken: ContinuousClock.Instant?
                        var gaps: [UInt64] = [], transits: [UInt64] = []
                        for try await buffer in response.body {
                            let now = clock.now
                            let arrived = monotonicNanos()
                            var stamps: [UInt64] = []
                            guard splitter.feed(buffer, stamps: &stamps) > 0 else { continue }
                            for stamp in stamps where stamp <= arrived { transits.append((arrived - stamp) / 1000) }
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
                            for transit in transits {
                                _ = t.transit.record(transit)
                                if transit > stallMicros { t.delayed += 1 }
                            }
                            if firstToken == nil {
                                t.failed += 1
                                t.reasons["200 without a token", default: 0] += 1
                            } else {
                                t.ok += 1
                            }
                        }
                    } catch {
                        let reason = "\(error)".prefix(160)
                        tally.withLockedValue { $0.failed += 1; $0.reasons[String(reason), default: 0] += 1 }
                    }
                }
            }
        }
        }
        return tally.withLockedValue { t in
            var out: [String: Any] = ["mode": "streams", "streams": options.count, "repeats": options.repeats, "ok": t.ok, "failed": t.failed,
                                      "stalls": t.stalls, "token_chunks": t.tokenChunks, "pace_ms": options.paceMillis,
                                      "stamped_chunks": Int(t.transit.totalCount), "delayed": t.delayed,
                                      "failure_reasons": t.reasons]
            for (key, value) in summary(t.ttfb, prefix: "ttfb") { out[key] = value }
            for (key, value) in summary(t.ttft, prefix: "ttft") { out[key] = value }
            for (key, value) in summary(t.gaps, prefix: "gap") { out[key] = value }
            for (key, value) in summary(t.total, prefix: "stream") { out[key] = value }
            if t.transit.totalCount > 0 {
                for (key, value) in summary(t.transit, prefix: "transit") { out[key] = value }
            }
            return out
        }
    }
}

/// Counts the complete lines (NDJSON objects or SSE `data:` lines) in a byte stream that carry
/// generated text, across buffer boundaries.
struct LineScanner {
    private var partial: [UInt8] = []

    /// Feeds bytes; returns how many completed lines carried a token, and adds the mock's
    /// stamps (`"content":"@NANOS "`) found in them to `stamps`.
    mutating func feed(_ buffer: ByteBuffer, stamps: inout [UInt64]) -> Int {
        var tokens = 0
        for byte in buffer.readableBytesView {
            if byte == UInt8(ascii: "\n") {
                if Self.carriesToken(partial) {
                    tokens += 1
                    if let stamp = Self.stamp(partial) { stamps.append(stamp) }
                }
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

    /// The digits after `"content":"@` (or the other keys), if the text is a stamp.
    static func stamp(_ line: [UInt8]) -> UInt64? {
        for key in keys {
            var i = 0
            while i + key.count < line.count {
                if line[i..<(i + key.count)].elementsEqual(key) {
                    var j = i + key.count
                    guard line[j] == UInt8(ascii: "@") else { return nil }
                    j += 1
                    var value: UInt64 = 0, digits = 0
                    while j < line.count, line[j] >= UInt8(ascii: "0"), line[j] <= UInt8(ascii: "9") {
                        value = value &* 10 &+ UInt64(line[j] - UInt8(ascii: "0"))
                        j += 1
                        digits += 1
                    }
                    return digits > 0 ? value : nil
                }
                i += 1
            }
        }
        return nil
    }

    static let keys: [[UInt8]] = [Array(#""content":""#.utf8), Array(#""response":""#.utf8), Array(#""text":""#.utf8)]
}


/// CLOCK_MONOTONIC in nanoseconds, the clock the mock stamps chunks with.
func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
