import AsyncHTTPClient
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Sends requests at a constant rate whatever the server does, and measures each from the
/// moment it was due. Bounded: at most `rate × seconds` requests, none sent after 1.5 × seconds
/// (the rest are counted as `unsent`: the driver itself fell behind), and every request times out.
struct OpenLoop {
    let options: DriverOptions
    let client: HTTPClient

    struct Tally {
        var histogram = newHistogram()
        var ok = 0
        var failed = 0
        var statuses: [Int: Int] = [:]
    }

    func run() async throws -> [String: Any] {
        let total = max(1, Int(options.rate * options.seconds))
        let interval = Duration.nanoseconds(Int64(1e9 / options.rate))
        let tally = NIOLockedValueBox(Tally())
        let clock = ContinuousClock()
        let start = clock.now + .milliseconds(50)
        let cutoff = start + .milliseconds(Int64(options.seconds * 1500))
        var sent = 0
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<total {
                let due = start + interval * i
                try? await clock.sleep(until: due)
                if clock.now > cutoff { break }
                sent += 1
                let request = options.request()
                group.addTask {
                    do {
                        let response = try await client.execute(request, timeout: .seconds(30))
                        _ = try await response.body.collect(upTo: 64 << 20)
                        let latency = due.micros(to: clock.now)
                        tally.withLockedValue {
                            _ = $0.histogram.record(latency)
                            $0.statuses[Int(response.status.code), default: 0] += 1
                            if response.status == .ok { $0.ok += 1 } else { $0.failed += 1 }
                        }
                    } catch {
                        tally.withLockedValue { $0.failed += 1 }
                    }
                }
            }
        }
        let elapsed = Double(start.micros(to: clock.now)) / 1e6
        return tally.withLockedValue { t in
            var out = summary(t.histogram, prefix: "latency")
            out["mode"] = "open"
            out["target_rate"] = options.rate
            out["sent"] = sent
            out["unsent"] = total - sent
            out["ok"] = t.ok
            out["failed"] = t.failed
            out["seconds"] = elapsed
            out["achieved_rate"] = Double(t.ok + t.failed) / elapsed
            out["statuses"] = Dictionary(uniqueKeysWithValues: t.statuses.map { ("\($0.key)", $0.value) })
            return out
        }
    }
}
