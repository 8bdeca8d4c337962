@testable import App
import AsyncHTTPClient
import Core
import FakeUpstream
import Foundation
import Logging
import PGStore
import SQLStore
import SQLiteStore
import TestSupport
import Testing

func usageRow(_ id: String, customer: Int64 = 1, cost: Int64 = 5) -> UsageRecord {
    UsageRecord(requestId: id, customerId: customer, keyId: nil, endpoint: "/api/chat", dialect: "ollama", provider: "ollama",
                model: "llama3", httpStatus: 200, outcome: .ok, cost: Money(nanos: cost),
                price: ModelPrice(perRequest: Money(nanos: cost)), priceSource: .configured, createdAtMicros: nowMicros())
}

func journalDirectory() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("lmsvr-journal-\(UUID().uuidString)").path
}

func lines(_ path: String) -> [Substring] {
    (FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? "").split(separator: "\n")
}

/// Makes the harness's PostgreSQL database unreachable (existing connections killed, new ones
/// refused) until `restore` runs.
func cutOff(_ h: GatewayHarness) async throws -> @Sendable () async throws -> Void {
    let name = String(h.databaseURL.split(separator: "/").last!)
    let admin = try await PGDatabase.connect(conninfo: try TestDatabases.postgresAdminURL(), size: 1)
    _ = try await admin.withConnection { c in
        try c.executeScript("ALTER DATABASE \(name) ALLOW_CONNECTIONS false")
        try c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", .text(name))
    }
    return {
        _ = try await admin.withConnection { try $0.executeScript("ALTER DATABASE \(name) ALLOW_CONNECTIONS true") }
        await admin.shutdown()
    }
}

// MARK: Tests

@Suite("Settle journal")
struct JournalTests {
    @Test func recordsAreOnDiskUntilWrittenThenTheFileEmpties() async throws {
        let directory = journalDirectory()
        let journal = try SettleJournal(directory: directory, maxBytes: 1 << 20, logger: Logger(label: "test"))
        for i in 0..<3 { try await journal.append(usageRow("r\(i)")) }
        #expect(journal.depth == 3 && journal.oldestMicros != nil)
        #expect(lines(journal.path).count == 3)
        for _ in 0..<3 { journal.removeFirst() }
        #expect(journal.isEmpty)
        #expect(try await eventually { lines(journal.path).isEmpty })
        await journal.shutdown()
    }

    @Test func aJournalThatNeverQuiteDrainsIsRewrittenWithOnlyItsWaitingRecords() async throws {
        let journal = try SettleJournal(directory: journalDirectory(), maxBytes: 1 << 30, compactAbove: 64 << 10,
                                        logger: Logger(label: "test"))
        try await journal.append((0..<400).map { usageRow("r\($0)") })
        let before = try #require(try FileManager.default.attributesOfItem(atPath: journal.path)[.size] as? Int)
        #expect(before > 64 << 10)
        journal.removeFirst(380)
        #expect(try await eventually { lines(journal.path).count == 20 })
        #expect(journal.first?.requestId == "r380" && journal.depth == 20)
        // Appends go on after the rewrite, to the new file.
        try await journal.append(usageRow("after"))
        #expect(lines(journal.path).count == 21 && lines(journal.path).last?.contains("after") == true)
        await journal.shutdown()
    }

    @Test func aDeadProcesssFileIsAdoptedTornLastLineAndAllButALiveOnesIsNot() async throws {
        let directory = journalDirectory()
        let live = try SettleJournal(directory: directory, maxBytes: 1 << 20, logger: Logger(label: "test"))
        try await live.append(usageRow("live"))
        // What a process that died mid-write leaves: two whole records and a torn one.
        let encoder = JSONEncoder()
        var dead = Data()
        for id in ["a", "b"] {
            dead += try encoder.encode(["usage": usageRow(id)]).dropLast() + Data(#","journaledAtMicros":1}"#.utf8) + Data([0x0A])
        }
        dead += Data(#"{"usage":{"requestId":"c","#.utf8)
        let deadPath = directory + "/settles-dead.journal"
        _ = FileManager.default.createFile(atPath: deadPath, contents: dead)

        let next = try SettleJournal(directory: directory, maxBytes: 1 << 20, logger: Logger(label: "test"))
        #expect(try await next.adoptOrphans().map(\.requestId) == ["a", "b"])
        #expect(next.depth == 2 && next.first?.requestId == "a")
        #expect(!FileManager.default.fileExists(atPath: deadPath))
        #expect(FileManager.default.fileExists(atPath: live.path)) // still locked by its process
        #expect(lines(next.path).count == 2)
        await live.shutdown()
        await next.shutdown()
    }

    @Test func aDatabaseOutageDuringAStreamJournalsItsSettleAndTheJournalDrainsByItself() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["DB_POOL_WAIT_MS": "500"]) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            async let answer = h.stream("/api/chat", key: key, json: #"{"model":"drip","messages":[]}"#)
            #expect(try await eventually {
                try await h.database.withConnection { try $0.execute("SELECT COUNT(*) FROM holds")[0].int(0) } == 1
            })
            let restore = try await cutOff(h)
            let r = try await answer
            // The answer completed: its charge is on disk, in the journal.
            let last = try ndjsonLines(r.body).last
            #expect(r.status == 200 && last?["done"] as? Bool == true)
            #expect(h.journal.depth == 1)
            let health = try await h.send(.GET, "/health")
            #expect(health.status == 503)
            let state = try jsonObject(health.body)
            #expect(state["status"] as? String == "degraded" && (state["journal"] as? [String: Any])?["depth"] as? Int == 1)
            #expect(try await h.send(.GET, "/metrics").body.contains("lmsvr_journal_depth 1"))
            try await restore()
            #expect(try await eventually { h.journal.isEmpty })
            let row = try #require(try await h.ledger().first)
            #expect(row.outcome == "ok" && row.cost == 10_000_000)
            let status = try await h.budget(customer)
            #expect(status.spent == Money(nanos: 10_000_000) && status.held == .zero)
            #expect(try jsonObject(try await h.send(.GET, "/health").body)["status"] as? String == "ok")
            #expect(try await h.send(.GET, "/metrics").body.contains("lmsvr_journal_replays_total 1"))
        }
    }

    @Test func aLockedSQLiteDatabaseLosesNoSettle() async throws {
        var upstream = FakeUpstream.Options()
        upstream.chunks = 10
        upstream.dripMillis = 300
        try await GatewayHarness.with(backend: .sqlite, upstreamOptions: upstream, sqliteBusyTimeoutMillis: 300) { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            async let answer = h.stream("/api/chat", key: key, json: #"{"model":"slowstream","messages":[]}"#)
            #expect(try await eventually {
                try await h.database.withConnection { try $0.execute("SELECT COUNT(*) FROM holds")[0].int(0) } == 1
            })
            // Another process takes the write lock and keeps it, past the busy timeout, until the
            // stream's settle has gone to the journal.
            let other = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
            _ = try await other.withConnection { try $0.executeScript("BEGIN IMMEDIATE") }
            #expect(try await answer.status == 200)
            #expect(try await eventually { h.journal.depth == 1 })
            _ = try await other.withConnection { try $0.executeScript("COMMIT") }
            await other.shutdown()
            #expect(try await eventually {
                let written = try await h.ledger().count
                return h.journal.isEmpty && written == 1
            })
            #expect(try await h.ledger().first?.cost == 10_000_000)
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func aFullJournalRefusesNewRequests() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["DB_POOL_WAIT_MS": "500", "JOURNAL_MAX_BYTES": "1024"]) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            async let first = h.stream("/api/chat", key: key, json: #"{"model":"drip","messages":[]}"#)
            async let second = h.stream("/api/chat", key: key, json: #"{"model":"drip","messages":[]}"#)
            #expect(try await eventually {
                try await h.database.withConnection { try $0.execute("SELECT COUNT(*) FROM holds")[0].int(0) } == 2
            })
            let restore = try await cutOff(h)
            _ = try await (first, second)
            #expect(h.journal.depth == 2)
            let refused = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(refused.status == 503 && refused.body.contains("charges cannot be recorded"))
            try await restore()
            #expect(try await eventually { h.journal.isEmpty })
            #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
        }
    }
}
