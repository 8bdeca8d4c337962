import Core
import Foundation
import PGStore
import SQLStore
import SQLiteStore
import TestSupport
import Testing

/// Revokes a key behind the gateway's back: no NOTIFY, as if the notice were lost.
func silentlyRevoke(_ h: GatewayHarness, keyId: Int64) async throws {
    _ = try await h.database.withConnection { try $0.execute("UPDATE api_keys SET revoked_us = 1 WHERE id = $1", .int(keyId)) }
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
    _ = try await h.database.withConnection { try $0.execute("UPDATE api_keys SET revoked_us = NULL WHERE id = 1") }
    try await revoke()
    #expect(try await eventually { try await h.send(.GET, "/api/version", key: key).status == 401 })
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

    @Test func withoutNoticesAnEntryLivesNoLongerThanTheTTL() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["CACHE_TTL_SECONDS": "1"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
            try await silentlyRevoke(h, keyId: 1)
            let revokedAt = ContinuousClock.now
            var status = 200
            while status == 200 && ContinuousClock.now - revokedAt < .seconds(3) {
                status = try await h.send(.GET, "/api/version", key: key).status
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(status == 401)
        }
    }
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

    @Test func whileTheWatcherFindsNothingChangedAKeyStaysCachedPastTheTTL() async throws {
        try await GatewayHarness.with(backend: .sqlite, environment: ["CACHE_TTL_SECONDS": "1"], listen: true) { h in
            try await waitUntilListening(h)
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
            try await Task.sleep(for: .milliseconds(2500)) // past the TTL, the watcher polling all along
            // A change the watcher cannot see (the gateway's own connection moves no data
            // version): the key is still served from the cache, so its entry outlived the TTL.
            try await silentlyRevoke(h, keyId: 1)
            #expect(try await h.send(.GET, "/api/version", key: key).status == 200)
            // A revocation by another process is seen as before.
            _ = try await h.database.withConnection { try $0.execute("UPDATE api_keys SET revoked_us = NULL WHERE id = 1") }
            let cli = try await SQLiteDatabase.open(path: String(h.databaseURL.dropFirst("sqlite:///".count)))
            _ = try await SQLiteStore(database: cli).revokeKey(id: 1, nowMicros: nowMicros())
            await cli.shutdown()
            #expect(try await eventually { try await h.send(.GET, "/api/version", key: key).status == 401 })
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
