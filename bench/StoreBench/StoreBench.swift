import Core
import Foundation
import Migrate
import PGStore
import SQLStore
import SQLiteStore

/// Measures hold+settle pairs per second against a real store.
///
///     store-bench <database-url> [--tasks 16] [--pairs 4000] [--customers 1] [--shared] [--no-keys] [--limits]
///
/// Every request carries a key of its customer (one key each), as the gateway's do, so the key's
/// month row is part of the path; `--no-keys` leaves it out (as before keys had months).
/// `--limits` gives every key and customer requests-per-minute, tokens-per-minute and concurrency
/// limits far above what the run reaches, so their bookkeeping is measured, never a refusal.
///
/// `--shared` reuses the customers `bench-shared-N@example.com`, so several processes run at
/// once (as replicas would) contend for the same rows.
///
/// Each task loops: hold a flat amount, then settle it with a usage row, as the gateway does per
/// request. With one customer every pair contends for the same period row (the hot path a busy
/// customer takes); with many, tasks spread over rows.
@main
struct StoreBench {
    static func main() async throws {
        var args = Array(CommandLine.arguments.dropFirst())
        guard !args.isEmpty else {
            print("usage: store-bench <database-url> [--tasks N] [--pairs N] [--customers N]")
            exit(2)
        }
        let url = args.removeFirst()
        func option(_ name: String, _ fallback: Int) -> Int {
            guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
            return v
        }
        let tasks = option("--tasks", 16), pairs = option("--pairs", 4000), customers = option("--customers", 1)
        let store: any Store
        switch try DatabaseLocation(url: url) {
        case .sqlite(let path):
            let db = try await SQLiteDatabase.open(path: path)
            try await Migrator(database: db).migrate()
            store = SQLiteStore(database: db)
        case .postgres(let conninfo):
            let db = try await PGDatabase.connect(conninfo: conninfo, size: tasks)
            try await Migrator(database: db).migrate()
            store = PGStore(database: db)
        }
        var ids: [Int64] = []
        let run = UUID().uuidString.prefix(8)
        let shared = args.contains("--shared")
        for i in 0..<customers {
            let email = shared ? "bench-shared-\(i)@example.com" : "bench-\(run)-\(i)@example.com"
            do {
                ids.append(try await store.createCustomer(name: "bench", email: email,
                                                          monthlyBudget: Money(nanos: Int64.max / 4), nowMicros: nowMicros()).id)
            } catch StoreError.duplicate {
                ids.append(try await store.listCustomers().first { $0.email == email }!.id)
            }
        }
        let customerIds = ids
        var keys: [Int64?] = Array(repeating: nil, count: ids.count)
        if !args.contains("--no-keys") {
            for (i, customer) in ids.enumerated() {
                keys[i] = try await store.createKey(customerId: customer, name: "bench", nowMicros: nowMicros())!.record.id
                if args.contains("--limits") {
                    let generous = LimitChange(requestsPerMinute: .some(1_000_000_000), tokensPerMinute: .some(1_000_000_000),
                                               concurrency: .some(1_000_000))
                    _ = try await store.setLimits(keyId: keys[i]!, generous)
                    _ = try await store.setLimits(customerId: customer, generous)
                }
            }
        }
        let keyIds = keys
        let start = DispatchTime.now().uptimeNanoseconds
        // Each pair's duration (hold + settle), in microseconds: what the budget path adds to a request.
        let durations = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for t in 0..<tasks {
                group.addTask {
                    var mine: [Int64] = []
                    for n in 0..<(pairs / tasks) {
                        let pairStart = DispatchTime.now().uptimeNanoseconds
                        let id = "\(run)-\(t)-\(n)"
                        let index = (t * 7919 + n) % customerIds.count
                        let customer = customerIds[index], key = keyIds[index]
                        let now = nowMicros()
                        let hold = HoldRequest(holdId: id, customerId: customer, keyId: key, amount: Money(nanos: 10_000_000),
                                               tokens: 100, nowMicros: now, expiresAtMicros: now + 600_000_000, endpoint: "/api/chat",
                                               dialect: "ollama", provider: "ollama", model: "bench")
                        guard case .admitted = try await store.hold(hold) else { fatalError("refused") }
                        let usage = UsageRecord(requestId: id, customerId: customer, keyId: key, endpoint: "/api/chat",
                                                dialect: "ollama", provider: "ollama", model: "bench", httpStatus: 200,
                                                outcome: .ok, cost: Money(nanos: 10_000_000),
                                                price: ModelPrice(perRequest: Money(nanos: 10_000_000)),
                                                priceSource: .configured, createdAtMicros: now)
                        _ = try await store.settle(holdId: id, usage: usage)
                        mine.append(Int64((DispatchTime.now().uptimeNanoseconds - pairStart) / 1000))
                    }
                    return mine
                }
            }
            var all: [Int64] = []
            for try await mine in group { all += mine }
            return all.sorted()
        }
        func percentile(_ p: Double) -> Int64 {
            durations.isEmpty ? 0 : durations[min(durations.count - 1, Int(Double(durations.count) * p / 100))]
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let done = (pairs / tasks) * tasks
        print(String(format: "{\"pairs\": %d, \"tasks\": %d, \"customers\": %d, \"seconds\": %.3f, \"pairs_per_second\": %.0f, \"pair_p50_us\": %lld, \"pair_p99_us\": %lld}",
                     done, tasks, customers, seconds, Double(done) / seconds, percentile(50), percentile(99)))
        await store.close()
    }
}
