import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// Resident memory of a server (`--pid`) as long-lived streams open in steps: RSS before any,
/// at each step once every stream has its response head, and after all of them are closed.
/// The per-stream cost is the slope from no streams to the last step.
struct MemoryProbe {
    let options: DriverOptions
    let client: HTTPClient

    func run() async throws -> [String: Any] {
        let heads = NIOLockedValueBox(0)
        let failures = NIOLockedValueBox(0)
        var samples: [[String: Int]] = [["streams": 0, "rss_kib": try Self.rssKiB(options.pid),
                                          "anon_kib": (try? Self.rssKiB(options.pid, field: "RssAnon")) ?? 0]]
        var afterClose = 0
        var opened = 0
        await withTaskGroup(of: Void.self) { group in
            for target in options.steps {
                while opened < target {
                    let request = options.request()
                    group.addTask {
                        do {
                            let response = try await client.execute(request, timeout: .seconds(600))
                            guard response.status == .ok else {
                                failures.withLockedValue { $0 += 1 }
                                return
                            }
                            heads.withLockedValue { $0 += 1 }
                            for try await _ in response.body {}
                        } catch {
                            if !Task.isCancelled { failures.withLockedValue { $0 += 1 } }
                        }
                    }
                    opened += 1
                }
                // Wait (bounded) until every stream of this step is open.
                let deadline = ContinuousClock.now + .seconds(60)
                while heads.withLockedValue({ $0 }) + failures.withLockedValue({ $0 }) < target, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(20))
                }
                try? await Task.sleep(for: .seconds(options.settleSeconds))
                samples.append(["streams": heads.withLockedValue { $0 }, "rss_kib": (try? Self.rssKiB(options.pid)) ?? 0,
                                "anon_kib": (try? Self.rssKiB(options.pid, field: "RssAnon")) ?? 0])
            }
            group.cancelAll()
            await group.waitForAll()
        }
        try? await Task.sleep(for: .seconds(options.settleSeconds))
        afterClose = (try? Self.rssKiB(options.pid)) ?? 0
        let first = samples[0], last = samples[samples.count - 1]
        let streams = max(1, last["streams"]! - first["streams"]!)
        let slope = Double(last["rss_kib"]! - first["rss_kib"]!) / Double(streams)
        return ["mode": "memory", "samples": samples, "rss_after_close_kib": afterClose,
                "kib_per_stream": (slope * 10).rounded() / 10, "failed": failures.withLockedValue { $0 }]
    }

    /// VmRSS (or another field, such as RssAnon: private memory without the mapped binary and
    /// libraries) of a process, in KiB.
    static func rssKiB(_ pid: Int32, field: String = "VmRSS") throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let value = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap({ Int($0) })
        else { throw DriverError.usage("no VmRSS for pid \(pid)") }
        return value
    }
}
