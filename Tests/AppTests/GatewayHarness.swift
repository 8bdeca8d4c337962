import App
import AsyncHTTPClient
import Core
import FakeUpstream
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import PGStore
import SQLStore
import SQLiteStore
import ServiceLifecycle
import TestSupport

/// A running gateway on port 0 in front of a fake Ollama on port 0, with a real store, for
/// end-to-end tests over loopback.
struct GatewayHarness {
    let gatewayPort: Int
    let upstreamPort: Int
    let store: any Store
    let database: any SQLDatabase
    let databaseURL: String
    let fake: FakeUpstream
    let configuration: Configuration
    let cache: LookupCache
    let journal: SettleJournal
    /// The type of the application's responder, as `serve` runs it.
    let responderType: Any.Type
    var base: String { "http://127.0.0.1:\(gatewayPort)" }

    /// Creates a customer (budget in nano-dollars; nil = unlimited) and a key; returns both.
    func customer(budgetNanos: Int64?, email: String = "c\(UUID().uuidString.prefix(8))@example.com")
        async throws -> (customer: Customer, key: String)
    {
        let customer = try await store.createCustomer(name: "Test", email: email,
                                                      monthlyBudget: budgetNanos.map(Money.init(nanos:)), nowMicros: nowMicros())
        let key = try await store.createKey(customerId: customer.id, name: nil, nowMicros: nowMicros())!
        return (customer, key.plaintext)
    }

    /// Sends a request and collects the whole response.
    func send(_ method: HTTPMethod = .POST, _ path: String, key: String? = nil, json: String? = nil,
              headers: [(String, String)] = []) async throws -> (status: Int, headers: HTTPHeaders, body: String) {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let key { request.headers.add(name: "authorization", value: "Bearer \(key)") }
        for (k, v) in headers { request.headers.add(name: k, value: v) }
        if let json {
            request.headers.add(name: "content-type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: json))
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 64 << 20)
        return (Int(response.status.code), response.headers, String(buffer: body))
    }

    /// Ledger rows with the dialect and provider, as (dialect, provider, model, cached tokens).
    func ledgerRoutes() async throws -> [(dialect: String, provider: String, model: String, cached: Int64)] {
        try await database.withConnection { c in
            try c.execute("SELECT dialect, provider, model, cached_tokens FROM usage ORDER BY id").map {
                (try $0.text(0), try $0.text(1), try $0.text(2), try $0.int(3))
            }
        }
    }

    /// Ledger rows as (request id, outcome, status, cost nanos, prompt, completion, token source).
    func ledger() async throws -> [(requestId: String, outcome: String, status: Int64, cost: Int64, prompt: Int64,
                                    completion: Int64, source: String)] {
        try await database.withConnection { c in
            try c.execute("SELECT request_id, outcome, http_status, cost_nanos, prompt_tokens, completion_tokens, token_source FROM usage ORDER BY id").map {
                (try $0.text(0), try $0.text(1), try $0.int(2), try $0.int(3), try $0.int(4), try $0.int(5), try $0.text(6))
            }
        }
    }

    func budget(_ customer: Customer) async throws -> BudgetStatus {
        try await store.budgetStatus(customerId: customer.id, period: BudgetPeriod(containingMicros: nowMicros()))!
    }

    /// Runs `body` against a fresh gateway and fake upstream, then stops both. `listen`: run the
    /// change feed `serve` runs (on PostgreSQL the listener and its `ChangeConfirmer`);
    /// `listenerConfirms: false` leaves the confirmer out, so entries expire by their own TTL;
    /// `listenerURL`: where the listener connects (default: the gateway's database).
    static func with(
        backend: Backend = .sqlite,
        environment: [String: String] = [:],
        upstreamOptions: FakeUpstream.Options = .init(),
        upstreamDown: Bool = false,
        listen: Bool = false,
        listenerConfirms: Bool = true,
        listenerURL: String? = nil,
        sqliteBusyTimeoutMillis: Int = 10_000,
        _ body: (GatewayHarness) async throws -> Void
    ) async throws {
        let fake = FakeUpstream(options: upstreamOptions)
        let (store, database, url) = try await backend.makeStore(sqliteBusyTimeoutMillis: sqliteBusyTimeoutMillis)
        let logger = Logger(label: "test")
        try await withThrowingTaskGroup(of: Void.self) { group in
            let upstreamPort: Int
            var refusingSocket: Int32?
            defer { if let refusingSocket { close(refusingSocket) } }
            if upstreamDown {
                (upstreamPort, refusingSocket) = try RefusingPort.make()
            } else {
                let (stream, continuation) = AsyncStream.makeStream(of: Int.self)
                let upstreamApp = Application(router: fake.router(),
                                              configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                                              onServerRunning: { continuation.yield($0.localAddress!.port!) },
                                              logger: Logger(label: "fake"))
                group.addTask { try await upstreamApp.run() }
                var iterator = stream.makeAsyncIterator()
                upstreamPort = await iterator.next()!
            }
            let journalDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("lmsvr-journal-\(UUID().uuidString)").path
            var env = ["OLLAMA_BASE_URL": "http://127.0.0.1:\(upstreamPort)", "HOST": "127.0.0.1", "PORT": "0",
                       "JOURNAL_DIR": journalDirectory,
                       "OPENAI_BASE_URL": "http://127.0.0.1:\(upstreamPort)/v1",
                       "ANTHROPIC_BASE_URL": "http://127.0.0.1:\(upstreamPort)",
                       "LOG_LEVEL": "WARNING", "DATABASE_URL": url]
            for (k, v) in environment { env[k] = v }
            let configuration = try Configuration(environment: env)
            let upstream = UpstreamClient(configuration: configuration)
            let journal = try SettleJournal(directory: configuration.journalDirectory, maxBytes: configuration.journalMaxBytes,
                                            logger: logger)
            let gateway = Gateway(configuration: configuration, store: store, upstream: upstream, journal: journal, logger: logger)
            // The change feed serve runs: LISTEN on PostgreSQL, the data-version watcher on SQLite.
            let listener = listen && backend == .postgres ? PGListener(conninfo: listenerURL ?? url, logger: logger) : nil
            listener?.start { [cache = gateway.cache] in cache.handle($0) }
            if let listener, listenerConfirms {
                let confirmer = ChangeConfirmer(cache: gateway.cache, store: store, listening: { listener.hearsDirectly }, logger: logger)
                group.addTask { await confirmer.run() }
            }
            defer { listener?.stop() }
            if listen, let sqlite = database as? SQLiteDatabase {
                group.addTask { [cache = gateway.cache] in await SQLiteChangeWatcher(database: sqlite).run { cache.handle($0) } }
            }
            let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
            let app = gateway.application(onServerRunning: { portContinuation.yield($0) })
            group.addTask { try await app.run() }
            var portIterator = ports.makeAsyncIterator()
            let gatewayPort = await portIterator.next()!
            let harness = GatewayHarness(gatewayPort: gatewayPort, upstreamPort: upstreamPort, store: store,
                                         database: database, databaseURL: url, fake: fake, configuration: configuration,
                                         cache: gateway.cache, journal: journal, responderType: type(of: try await app.responder))
            do {
                try await body(harness)
            } catch {
                group.cancelAll()
                await upstream.shutdown()
                await journal.shutdown()
                await store.close()
                throw error
            }
            group.cancelAll()
            await upstream.shutdown()
            await journal.shutdown()
            await store.close()
        }
    }
}

let chatBody = #"{"model":"llama3","messages":[{"role":"user","content":"why is the sky blue?"}]}"#
