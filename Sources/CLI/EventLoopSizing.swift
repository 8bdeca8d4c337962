import Foundation

/// One event loop per CPU this process may actually run on. NIO sizes its loops from the
/// machine's CPU count or cgroup quota, not from the affinity mask, so a gateway pinned with
/// `taskset` (or a cpuset) to fewer CPUs would run more loops than CPUs and pay a context switch
/// whenever a request's work moves between them (measured: about a fifth of the CPU per request
/// with two loops on one CPU). An explicit `NIO_SINGLETON_GROUP_LOOP_COUNT` always wins.
enum EventLoopSizing {
    static func matchUsableCPUs() {
        guard ProcessInfo.processInfo.environment["NIO_SINGLETON_GROUP_LOOP_COUNT"] == nil,
              let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }),
              let usable = cpuCount(list: line.dropFirst("Cpus_allowed_list:".count)),
              usable < ProcessInfo.processInfo.activeProcessorCount
        else { return }
        setenv("NIO_SINGLETON_GROUP_LOOP_COUNT", String(usable), 1)
    }

    /// The number of CPUs in a kernel CPU list such as `0-3,8,10-11`; nil if unreadable.
    static func cpuCount(list: Substring) -> Int? {
        var count = 0
        for range in list.split(separator: ",") {
            let bounds = range.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard let first = bounds.first ?? nil, let last = bounds.last ?? nil, last >= first else { return nil }
            count += last - first + 1
        }
        return count > 0 ? count : nil
    }
}
