import Core
import Foundation
import TestSupport
import Testing

/// A database URL for a fresh, empty database of the backend.
func freshURL(_ backend: Backend) async throws -> String {
    switch backend {
    case .sqlite: return "sqlite:///" + TestDatabases.freshSQLitePath()
    case .postgres:
        let url = try await TestDatabases.freshPostgresURL()
        let migrated = try LmsvrProcess.run(["migrate"], environment: ["DATABASE_URL": url])
        #expect(migrated.status == 0, "\(migrated.stderr)")
        return url
    }
}

func lmsvr(_ url: String, _ arguments: String...) throws -> LmsvrProcess.Result {
    try LmsvrProcess.run(arguments, environment: ["DATABASE_URL": url])
}

func json(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8))
}

// MARK: Tests

@Suite("lmsvr command line")
struct CLITests {
    @Test(arguments: Backend.allCases)
    func theSeedReadmeFlowWorksVerbatim(backend: Backend) async throws {
        let url = try await freshURL(backend)
        var r = try lmsvr(url, "create-customer", "John Doe", "john@example.com", "--budget", "100.0")
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("Created customer 1"))
        r = try lmsvr(url, "generate-key", "1")
        #expect(r.status == 0)
        #expect(r.stdout.contains("sk_"))
        #expect(r.stdout.contains("cannot be shown again"))
        r = try lmsvr(url, "set-pricing", "llama3", "0.001", "0.002")
        #expect(r.status == 0, "\(r.stderr)")
        r = try lmsvr(url, "check-budget", "1")
        #expect(r.status == 0)
        #expect(r.stdout.contains("$100.00"))
        r = try lmsvr(url, "usage-report", "1")
        #expect(r.status == 0)
        #expect(r.stdout.contains("TOTAL"))
        r = try lmsvr(url, "export-usage", "1", "--format", "csv")
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix("request_id,created_at,customer_id"))
        r = try lmsvr(url, "revoke-key", "1")
        #expect(r.status == 0)
        r = try lmsvr(url, "list-keys", "1")
        #expect(r.stdout.contains("revoked"))
        r = try lmsvr(url, "list-customers")
        #expect(r.stdout.contains("john@example.com"))
        #expect(r.stdout.contains("$100.00"))
    }

    @Test(arguments: Backend.allCases)
    func everyCommandPrintsOneJSONDocument(backend: Backend) async throws {
        let url = try await freshURL(backend)
        let customer = try #require(try json(try lmsvr(url, "create-customer", "Ann", "ann@example.com", "--budget", "5", "--json").stdout) as? [String: Any])
        #expect(customer["id"] as? Int == 1)
        #expect(customer["monthly_budget_usd"] as? String == "5.00")
        let key = try #require(try json(try lmsvr(url, "generate-key", "1", "--name", "ci", "--json").stdout) as? [String: Any])
        let plaintext = try #require(key["key"] as? String)
        #expect(plaintext.hasPrefix("sk_") && plaintext.count >= 43)
        #expect(key["name"] as? String == "ci")
        let keys = try #require(try json(try lmsvr(url, "list-keys", "1", "--json").stdout) as? [[String: Any]])
        #expect(keys.count == 1)
        #expect(keys[0]["key"] == nil, "a listing must never contain the key")
        let price = try #require(try json(try lmsvr(url, "set-pricing", "llama3", "0.001", "0.002", "--input-per-1m", "0.5",
                                                    "--output-per-1m", "1.5", "--json").stdout) as? [String: Any])
        #expect(price["input_per_1m_usd"] as? String == "0.50")
        // A reference is stored as Ollama resolves it, which is what requests are priced by.
        let spelled = try #require(try json(try lmsvr(url, "set-pricing", "registry.ollama.ai/library/Mistral:latest", "0.003",
                                                      "0", "--json").stdout) as? [String: Any])
        #expect(spelled["model"] as? String == "mistral")
        let budget = try #require(try json(try lmsvr(url, "check-budget", "1", "--json").stdout) as? [String: Any])
        #expect(budget["budget_usd"] as? String == "5.00")
        #expect(budget["spent_usd"] as? String == "0.00")
        let report = try #require(try json(try lmsvr(url, "usage-report", "1", "--json", "--start-date", "2026-01-01",
                                                     "--end-date", "2026-12-31").stdout) as? [String: Any])
        #expect(report["total_requests"] as? Int == 0)
        #expect(try json(try lmsvr(url, "export-usage", "1", "--json").stdout) as? [Any] != nil)
        #expect(try json(try lmsvr(url, "export-usage", "1", "--format", "json").stdout) as? [Any] != nil)
        #expect(try json(try lmsvr(url, "list-customers", "--json").stdout) as? [Any] != nil)
        #expect(try json(try lmsvr(url, "list-pricing", "--json").stdout) as? [Any] != nil)
        let archiveFile = FileManager.default.temporaryDirectory.appendingPathComponent("archive-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: archiveFile) }
        let archived = try #require(try json(try lmsvr(url, "archive-usage", "--before", "2020-01", "--output", archiveFile,
                                                       "--format", "json", "--json").stdout) as? [String: Any])
        #expect(archived["archived_rows"] as? Int == 0)
        #expect(try json(try String(contentsOfFile: archiveFile, encoding: .utf8)) as? [Any] != nil)
        #expect(try json(try lmsvr(url, "migrate", "--status", "--json").stdout) as? [Any] != nil)
        #expect(try json(try lmsvr(url, "migrate", "--json").stdout) as? [String: Any] != nil)
        let revoked = try #require(try json(try lmsvr(url, "revoke-key", "1", "--json").stdout) as? [String: Any])
        #expect(revoked["revoked"] as? Bool == true)
        let changed = try #require(try json(try lmsvr(url, "set-budget", "1", "unlimited", "--json").stdout) as? [String: Any])
        #expect(changed["monthly_budget_usd"] == nil || changed["monthly_budget_usd"] is NSNull)
    }

    static let badInvocations: [(arguments: [String], status: Int32, mentions: String)] = [
        (["create-customer", "A", "a@example.com", "--budget", "-5"], 2, "budget"),
        (["create-customer", "A", "a@example.com", "--budget", "ten"], 2, "not a decimal"),
        (["create-customer", "A", "not-an-email"], 2, "not an email"),
        (["create-customer", "Dup", "JOHN@example.com"], 1, "already exists"),
        (["generate-key", "99"], 1, "no customer with id 99"),
        (["generate-key", "abc"], 2, "invalid"),
        (["revoke-key", "99"], 1, "no key with id 99"),
        (["list-keys", "x1"], 2, "invalid"),
        (["check-budget", "42"], 1, "no customer"),
        (["usage-report", "1", "--start-date", "2026-02-30"], 2, "not a date"),
        (["usage-report", "1", "--start-date", "2026-03-02", "--end-date", "2026-03-01"], 2, "before"),
        (["export-usage", "1", "--format", "xml"], 2, "xml"),
        (["archive-usage", "--before", "2026-13", "--output", "/tmp/lmsvr-never-written.csv"], 2, "YYYY-MM"),
        (["archive-usage", "--before", "2026-01"], 2, "--output"),
        (["archive-usage", "--before", "2999-01", "--output", "/tmp/lmsvr-never-written.csv"], 2, "current month"),
        (["archive-usage", "--before", "2026-01", "--output", "/etc/passwd"], 2, "never replaces"),
        (["archive-usage", "--before", "2026-01", "--output", "/nonexistent-dir/archive.csv"], 1, "nonexistent-dir"),
        (["set-pricing", "llama3", "0.0000000001", "0"], 2, "more than 9 decimal places"),
        (["set-pricing", "llama3", "0.001", "-1"], 2, "per-model"),
        (["set-budget", "1", "lots"], 2, "not a decimal"),
        (["no-such-command"], 2, "lmsvr --help"),
    ]

    @Test(arguments: Backend.allCases)
    func badArgumentsExitNonZeroWithOneLineAndChangeNothing(backend: Backend) async throws {
        let url = try await freshURL(backend)
        _ = try lmsvr(url, "create-customer", "John", "john@example.com", "--budget", "10")
        let before = try lmsvr(url, "export-usage", "1", "--json").stdout + (try lmsvr(url, "list-customers", "--json").stdout)
            + (try lmsvr(url, "list-pricing", "--json").stdout)
        for bad in Self.badInvocations {
            let r = try LmsvrProcess.run(bad.arguments, environment: ["DATABASE_URL": url])
            #expect(r.status == bad.status, "\(bad.arguments): exit \(r.status), \(r.stderr)")
            let lines = r.stderr.split(whereSeparator: \.isNewline)
            #expect(lines.count == 1, "\(bad.arguments) printed \(r.stderr)")
            #expect(r.stderr.lowercased().contains(bad.mentions.lowercased()), "\(bad.arguments): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack"))
        }
        let after = try lmsvr(url, "export-usage", "1", "--json").stdout + (try lmsvr(url, "list-customers", "--json").stdout)
            + (try lmsvr(url, "list-pricing", "--json").stdout)
        #expect(before == after)
    }

    @Test func helpListsEveryCommandAndExitsZero() throws {
        for arguments in [["--help"], [], ["help"]] {
            let r = try LmsvrProcess.run(arguments)
            #expect(r.status == 0, "\(arguments): \(r.stderr)")
            for command in ["serve", "migrate", "create-customer", "list-customers", "generate-key", "revoke-key", "list-keys",
                            "usage-report", "check-budget", "export-usage", "archive-usage", "set-pricing", "list-models", "sync-models"] {
                #expect(r.stdout.contains(command), "\(arguments) does not list \(command)")
            }
        }
        let sub = try LmsvrProcess.run(["export-usage", "--help"])
        #expect(sub.status == 0 && sub.stdout.contains("--format"))
    }

    @Test func anUnreachableDatabaseIsOneLineWithThePasswordMasked() throws {
        let r = try LmsvrProcess.run(["list-customers"], environment: ["DATABASE_URL": "postgresql://admin:hunter2@127.0.0.1:1/lmsvr"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot reach the database"))
        #expect(r.stderr.contains("admin:***@"))
        #expect(!r.stderr.contains("hunter2"))
        #expect(r.stderr.split(whereSeparator: \.isNewline).count == 1)
        let bad = try LmsvrProcess.run(["list-customers"], environment: ["DATABASE_URL": "mysql://x"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains("DATABASE_URL"))
    }

    @Test func postgresCommandsRefuseASchemaThatIsBehind() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let r = try lmsvr(url, "list-customers")
        #expect(r.status == 1)
        #expect(r.stderr.contains("lmsvr migrate"))
        #expect(try lmsvr(url, "migrate", "--status").stdout.contains("pending"))
    }

    @Test func threeMigrateProcessesAtOnceApplyEachStepOnce() async throws {
        let url = try await TestDatabases.freshPostgresURL()
        let results = try await withThrowingTaskGroup(of: LmsvrProcess.Result.self) { group in
            for _ in 0..<3 { group.addTask { try lmsvr(url, "migrate", "--json") } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.allSatisfy { $0.status == 0 }, "\(results.map(\.stderr))")
        let applied = try results.map { try #require(try json($0.stdout) as? [String: Any])["applied"] as? [String] ?? [] }
        #expect(applied.flatMap { $0 }.sorted() == ["0001_init", "0002_ledger_at_scale", "0003_ledger_guards", "0004_scoped_keys", "0005_usage_server", "0006_usage_daily_by_day", "0007_lighter_holds",
                                                  "0008_change_notices_by_trigger", "0009_lone_hold", "0010_key_months_charged", "0011_lone_settle", "0012_holds_by_index",
                                                  "0013_key_limits_under_lock"])
        let again = try #require(try json(try lmsvr(url, "migrate", "--json").stdout) as? [String: Any])
        #expect((again["applied"] as? [String])?.isEmpty == true)
        let status = try #require(try json(try lmsvr(url, "migrate", "--status", "--json").stdout) as? [[String: Any]])
        #expect(status.allSatisfy { $0["state"] as? String == "applied" })
    }

    @Test func exportStreamsALargeLedgerInBoundedMemory() async throws {
        let (store, database, url) = try await Backend.sqlite.makeStore()
        let customer = try await store.createCustomer(name: "Big", email: "big@example.com", monthlyBudget: nil, nowMicros: nowMicros())
        let rows = 100_000
        _ = try await database.transaction { c in
            try c.execute(
                """
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $2)
                INSERT INTO usage (request_id, customer_id, period, endpoint, dialect, provider, model, http_status, outcome,
                  prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos,
                  price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_source, latency_us, created_us)
                SELECT 'req-' || i, $1, '2026-11', '/api/chat', 'ollama', 'ollama', 'llama3', 200, 'ok', 10, 20, 0, 'provider',
                  1, 1, 1, 0, 0, 0, 'configured', 1000, 1700000000000000 + i FROM n
                """, .int(customer.id), .int(Int64(rows)))
        }
        await store.close()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString).csv").path
        // The export runs under a small Python parent that reports its child's peak memory: a
        // child forked from this (large, busy) test process would inherit this process's peak
        // in its own ru_maxrss, whatever the export itself used.
        let measure = """
            import resource, subprocess, sys
            r = subprocess.run(sys.argv[1:], capture_output=True)
            sys.stderr.write(r.stderr.decode())
            print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            sys.exit(r.returncode)
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", measure, LmsvrProcess.binary, "export-usage", "1", "--format", "csv", "--output", output]
        process.environment = ["DATABASE_URL": url, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let peak = Int(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        let text = try String(contentsOfFile: output, encoding: .utf8)
        #expect(text.split(separator: "\r\n").count == rows + 1)
        // KiB; the CSV itself is ~40 MB.
        #expect(peak > 0 && peak < 120_000, "export peaked at \(peak) KiB")
        #expect(!FileManager.default.fileExists(atPath: output + ".partial"))
    }
}
