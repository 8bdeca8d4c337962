@testable import App
import Core
import Foundation
import PGStore
import SQLStore
import SQLiteStore
import TestSupport
import Testing

/// Revokes (or restores) a key behind the gateway's back, as if the notice were lost: on SQLite
/// through the gateway's own connection, which moves no data version; on PostgreSQL in replica
/// mode, where no ordinary trigger fires (migration 0008's NOTIFY triggers included).
func silentlyRevoke(_ h: GatewayHarness, keyId: Int64, revoked: Bool = true) async throws {
    try await silently(h, "UPDATE api_keys SET revoked_us = $2 WHERE id = $1", .int(keyId), revoked ? .int(1) : .null)
}

/// Runs one statement the change feed cannot see (see `silentlyRevoke`).
func silently(_ h: GatewayHarness, _ sql: String, _ binds: SQLValue...) async throws {
    let replica = h.database is PGDatabase
    _ = try await h.database.withConnection { c in
        if replica { _ = try c.execute("SET session_replication_role = replica") }
        defer { if replica { _ = try? c.execute("RESET session_replication_role") } }
        return try c.execute(sql, binds).count
    }
}

/// A cached key survives a change the feed does not report (the gateway's own connection moves
/// no data version and sends no NOTIFY), which proves the cache is in use; once `revoke` (a
/// revocation as the CLI makes it) commits, the key is refused.
func expectCachedKeyRefused(_ h: GatewayHarness, revoke: () async throws -> Void) async throws {
    try await waitUntilListening(h)
    let (_, key) = try await h.customer(budgetNanos: nil)
    #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
    try await silentlyRevoke(h, keyId: 1)
    #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
    try await silentlyRevoke(h, keyId: 1, revoked: false)
    try await revoke()
    #expect(try await eventually { try await h.send(.GET, "/api/version", key: key).status == 401 })
}

/// A key and a price read once are still served from the cache `idle` later (2.5 TTLs), the
/// feed confirming nothing changed all along: changes it cannot see (`silently`) go unnoticed.
/// Returns the key.
func expectEntriesOutliveTheTTL(_ h: GatewayHarness, idle: Duration) async throws -> String {
    try await waitUntilListening(h)
    let (_, key) = try await h.customer(budgetNanos: nil)
    #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
    let firstCost = try await h.ledger().last?.cost
    #expect(firstCost != nil && firstCost != 9)
    try await Task.sleep(for: idle)
    try await silentlyRevoke(h, keyId: 1)
    try await silently(h, """
        INSERT INTO model_prices (model, per_request_nanos, per_model_nanos, input_per_1m_nanos, output_per_1m_nanos, \
        effective_from_us) VALUES ('llama3', 9, 0, 0, 0, 0)
        """)
    #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
    #expect(try await h.ledger().last?.cost == firstCost)
    return key
}

/// A price scheduled ahead comes into force at its date, with no commit then to tell the
/// cache: the cached price is not used past it. `otherProcess` writes as the CLI would.
func expectAScheduledPriceOnTime(_ h: GatewayHarness, otherProcess: any Store) async throws {
    try await waitUntilListening(h)
    let (_, key) = try await h.customer(budgetNanos: nil)
    _ = try await otherProcess.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 7)), effectiveFromMicros: nowMicros() - 1)
    #expect(try await eventually {
        _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
        return try await h.ledger().last?.cost == 7
    })
    // Scheduled only now, so that however long the wait above took on a loaded machine (the
    // whole suite runs in parallel), the steps below have their 4 s before the date.
    let due = nowMicros() + 4_000_000
    _ = try await otherProcess.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 8)), effectiveFromMicros: due)
    // Once the feed has reported both commits (SQLite polls every 50 ms; a notice is quicker),
    // nothing evicts the price again: it is served from the cache until its date.
    try await Task.sleep(for: .milliseconds(500))
    #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
    #expect(h.cache.price(for: "llama3", nowMicros: nowMicros()) != nil)
    while nowMicros() < due + 50_000 { try await Task.sleep(for: .milliseconds(100)) }
    #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
    #expect(try await h.ledger().last?.cost == 8)
}

func waitUntilListening(_ h: GatewayHarness) async throws {
    #expect(try await eventually { h.cache.isEnabled }, "the change listener never connected")
}

@Suite("Gateway: change listener and caches (PostgreSQL)")
struct ListenerCacheTests {
    @Test func aCachedKeyIsRefusedTheMomentTheCLIRevokesIt() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            // The CLI's revocation notifies in its transaction: refused from the next request on.
            try await expectCachedKeyRefused(h) { _ = try await h.store.revokeKey(id: 1, nowMicros: nowMicros()) }
        }
    }

    @Test func aNewPriceReplacesTheCachedOne() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody) // caches the default price
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 7)), effectiveFromMicros: nowMicros())
            #expect(try await eventually {
                _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
                return try await h.ledger().last?.cost == 7
            })
        }
    }

    @Test func aKilledListenerReconnectsAndFlushesWhatItMayHaveMissed() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
            try await silentlyRevoke(h, keyId: 1) // the notice for this is "lost"
            let name = String(h.databaseURL.split(separator: "/").last!)
            let admin = try await PGDatabase.connect(conninfo: try TestDatabases.postgresAdminURL(), size: 1)
            _ = try await admin.withConnection {
                try $0.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", .text(name))
            }
            await admin.shutdown()
            // Requests may meet a dead pooled connection once (503); the revoked key must never pass
            // again once the listener is back, which flushes the cache.
            #expect(try await eventually {
                let status = try await h.send(.GET, "/api/version", key: key).status
                return status == 401 && h.cache.isEnabled
            })
            let metrics = samples(try await h.send(.GET, "/metrics").body)
            #expect((metrics["lmsvr_listener_reconnects_total"] ?? 0) >= 1)
        }
    }

    @Test func aRevocationMadeWithPlainSQLIsRefusedAtOnce() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            // No NOTIFY of its own (an operator's psql): migration 0008's trigger announces it.
            try await expectCachedKeyRefused(h) {
                _ = try await h.database.withConnection { try $0.execute("UPDATE api_keys SET revoked_us = 1 WHERE id = 1") }
            }
        }
    }

    @Test func whileTheListenerHearsItsMarkersKeysAndPricesStayCachedPastTheTTL() async throws {
        // A 4 s TTL: a marker every 2 s, so one late round on a loaded machine does not let an
        // entry lapse; 10 s idle is 2.5 TTLs.
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "4"], listen: true) { h in
            let key = try await expectEntriesOutliveTheTTL(h, idle: .seconds(10))
            // A revocation as the CLI makes it is seen as before.
            try await silentlyRevoke(h, keyId: 1, revoked: false)
            _ = try await h.store.revokeKey(id: 1, nowMicros: nowMicros())
            #expect(try await eventually { try await h.send(.GET, "/api/version", key: key).status == 401 })
        }
    }

    @Test func aScheduledPriceComesIntoForceOnTimeThoughCached() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            try await expectAScheduledPriceOnTime(h, otherProcess: h.store)
        }
    }

    @Test func withoutNoticesOrConfirmationsAnEntryLivesNoLongerThanTheTTL() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "4"], listen: true,
                                      listenerConfirms: false) { h in
            try await expectCachedThenRefusedWithinTheTTL(h)
        }
    }

    @Test func aListenerOnAnotherDatabaseConfirmsNothing() async throws {
        // The listener connects and LISTENs, but where no writer commits (as through a pooler that
        // lost its LISTEN): markers never come back, so entries still expire by their TTL.
        let elsewhere = try await TestDatabases.freshPostgresURL()
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "4"], listen: true,
                                      listenerURL: elsewhere) { h in
            try await expectCachedThenRefusedWithinTheTTL(h)
        }
    }

    @Test func withATriggerDisabledNoMarkerIsSentAndEntriesExpireByTheTTL() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "4"], listen: true) { h in
            // A change to api_keys would no longer announce itself, so no marker may vouch for it.
            _ = try await h.database.withConnection { try $0.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_update") }
            try await expectCachedThenRefusedWithinTheTTL(h)
        }
    }

    @Test func aChangeMadeWhileATriggerWasOffIsNotVouchedForOnceItIsBack() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "4"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
            _ = try await h.database.withConnection { try $0.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_notify_update") }
            _ = try await h.database.withConnection { try $0.execute("UPDATE api_keys SET revoked_us = 1 WHERE id = 1") }
            try await Task.sleep(for: .milliseconds(2500)) // a round (every 2 s) finds the trigger off
            _ = try await h.database.withConnection { try $0.execute("ALTER TABLE api_keys ENABLE TRIGGER api_keys_notify_update") }
            // The rounds send markers again, but must not vouch for what was cached before.
            try await expectRefused(h, key: key, within: .seconds(8))
        }
    }

    @Test func aTruncateOfThePricesReachesTheCache() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 7)), effectiveFromMicros: nowMicros())
            #expect(try await eventually {
                _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
                return try await h.ledger().last?.cost == 7
            })
            _ = try await h.database.withConnection { try $0.execute("TRUNCATE model_prices") }
            #expect(try await eventually {
                _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
                return try await h.ledger().last?.cost == h.configuration.defaultPricePerRequest.nanos
            })
        }
    }
}

/// A key is served from the cache after a change the feed cannot see, and refused once its
/// TTL (`CACHE_TTL_SECONDS` 4: room for a loaded machine) has run out, the feed confirming nothing.
func expectCachedThenRefusedWithinTheTTL(_ h: GatewayHarness) async throws {
    try await waitUntilListening(h)
    let (_, key) = try await h.customer(budgetNanos: nil)
    #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
    try await silentlyRevoke(h, keyId: 1)
    #expect(try await h.send(.GET, "/api/version", key: key).status == 200, "not served from the cache")
    try await expectRefused(h, key: key, within: .seconds(8))
}

/// The key is refused (401) within `limit` from now.
func expectRefused(_ h: GatewayHarness, key: String, within limit: Duration) async throws {
    let start = ContinuousClock.now
    var status = 200
    while status == 200 && ContinuousClock.now - start < limit {
        status = try await h.send(.GET, "/api/version", key: key).status
        try await Task.sleep(for: .milliseconds(50))
    }
    #expect(status == 401)
}

@Suite("Gateway: data-version watcher and caches (SQLite)")
struct SQLiteWatcherCacheTests {
    @Test func aCachedKeyIsRefusedOnceAnotherProcessRevokesIt() async throws {
        try await GatewayHarness.with(backend: .sqlite, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            // Another connection (the CLI's process) revokes: its commit moves the data version.
            try await expectCachedKeyRefused(h) {
                let cli = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
                _ = try await SQLiteStore(database: cli).revokeKey(id: 1, nowMicros: nowMicros())
                await cli.shutdown()
            }
        }
    }

    @Test func whileTheWatcherFindsNothingChangedKeysAndPricesStayCachedPastTheTTL() async throws {
        try await GatewayHarness.with(backend: .sqlite, environment: ["CACHE_TTL_SECONDS": "2"], listen: true) { h in
            let key = try await expectEntriesOutliveTheTTL(h, idle: .seconds(5))
            // A revocation by another process is seen as before.
            try await silentlyRevoke(h, keyId: 1, revoked: false)
            let cli = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
            _ = try await SQLiteStore(database: cli).revokeKey(id: 1, nowMicros: nowMicros())
            await cli.shutdown()
            #expect(try await eventually { try await h.send(.GET, "/api/version", key: key).status == 401 })
        }
    }

    @Test func aScheduledPriceComesIntoForceOnTimeThoughCached() async throws {
        try await GatewayHarness.with(backend: .sqlite, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            let cli = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
            try await expectAScheduledPriceOnTime(h, otherProcess: SQLiteStore(database: cli))
            await cli.shutdown()
        }
    }

    @Test func aPriceSetByAnotherProcessReplacesTheCachedOne() async throws {
        try await GatewayHarness.with(backend: .sqlite, environment: ["CACHE_TTL_SECONDS": "600"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody) // caches the default price
            let cli = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
            _ = try await SQLiteStore(database: cli).setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 7)),
                                                              effectiveFromMicros: nowMicros())
            await cli.shutdown()
            #expect(try await eventually {
                _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
                return try await h.ledger().last?.cost == 7
            })
        }
    }
}
