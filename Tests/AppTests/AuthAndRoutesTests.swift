import App
import AsyncHTTPClient
import FakeUpstream
import Core
import Foundation
import NIOCore
import TestSupport
import Testing

@Suite("Gateway: auth and routes")
struct AuthAndRoutesTests {
    @Test func missingUnknownAndRevokedKeysGet401InOllamasShape() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            var r = try await h.send(.POST, "/api/chat", json: chatBody)
            #expect(r.status == 401)
            #expect(r.body.contains(#""error":"missing API key"#))
            #expect(r.headers.first(name: "x-request-id")?.hasPrefix("req_") == true)
            r = try await h.send(.POST, "/api/chat", key: "sk_not_a_real_key", json: chatBody)
            #expect(r.status == 401)
            #expect(r.body == #"{"error":"invalid API key"}"#)
            r = try await h.send(.POST, "/api/chat", json: chatBody, headers: [("x-api-key", key)])
            #expect(r.status == 200)
            let keys = try await h.store.listKeys(customerId: 1)
            _ = try await h.store.revokeKey(id: keys[0].id, nowMicros: nowMicros())
            r = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(r.status == 401)
            #expect(r.body.contains("revoked"))
            #expect(h.fake.recorder.calls("/api/chat") == 1)
        }
    }

    @Test func aKeyRevokedByTheCLIInAnotherProcessIsRefusedWithinASecond() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
            let revoke = try LmsvrProcess.run(["revoke-key", "1"], environment: ["DATABASE_URL": h.databaseURL])
            #expect(revoke.status == 0, "\(revoke.stderr)")
            let revokedAt = ContinuousClock.now
            var status = 0
            repeat {
                status = try await h.send(.POST, "/api/chat", key: key, json: chatBody).status
            } while status == 200 && ContinuousClock.now - revokedAt < .seconds(1)
            #expect(status == 401)
        }
    }

    @Test(arguments: ["/api/pull", "/api/push", "/api/create", "/api/copy", "/api/delete", "/api/blobs/sha256:abc"])
    func modelManagementRoutesAreForbidden(path: String) async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let r = try await h.send(path == "/api/delete" ? .DELETE : .POST, path, key: key, json: #"{"model":"llama3"}"#)
            #expect(r.status == 403)
            #expect(r.body.contains("error"))
            #expect(h.fake.recorder.totalCalls == 0)
        }
    }

    @Test func readOnlyRoutesPassThroughUnchanged() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let tags = try await h.send(.GET, "/api/tags", key: key)
            #expect(tags.status == 200)
            #expect(tags.body == FakeUpstream.tagsBody)
            #expect(try await h.send(.GET, "/api/version", key: key).body == #"{"version":"0.5.1"}"#)
            #expect(try await h.send(.GET, "/api/ps", key: key).body == #"{"models":[]}"#)
            let show = try await h.send(.POST, "/api/show", key: key, json: #"{"model":"llama3"}"#)
            #expect(show.status == 200)
            #expect(show.body.contains(#""llama.context_length":8192"#))
            #expect(try await h.send(.POST, "/api/show", key: key, json: #"{"model":"nope"}"#).status == 404)
            #expect(try await h.send(.GET, "/api/tags").status == 401)
            let root = try await h.send(.GET, "/")
            #expect(root.status == 200 && root.body == "Ollama is running")
            #expect(try await h.send(.GET, "/nowhere", key: key).status == 404)
            // The operator's Ollama never sees the customer's key.
            #expect(h.fake.recorder.lastAuthorization == nil)
        }
    }

    @Test func modelsCarryPricingAndSyncedMetadata() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 1_000_000),
                perModel: Money(nanos: 2_000_000)), effectiveFromMicros: nowMicros())
            _ = try await h.store.setPrice(model: "gpt-private", price: ModelPrice(perRequest: Money(nanos: 5)), effectiveFromMicros: nowMicros())
            let upstream = UpstreamClient(configuration: h.configuration)
            let synced = try await ModelCatalog(upstream: upstream, store: h.store, configuration: h.configuration).sync()
            await upstream.shutdown()
            #expect(synced.count == 3)
            #expect(synced.first { $0.name == "llama3:latest" }?.contextLength == 8192)
            let r = try await h.send(.GET, "/api/models", key: key)
            #expect(r.status == 200)
            let models = try #require((try JSONSerialization.jsonObject(with: Data(r.body.utf8)) as? [String: Any])?["models"] as? [[String: Any]])
            let llama = try #require(models.first { $0["name"] as? String == "llama3:latest" })
            let pricing = try #require(llama["pricing"] as? [String: Any])
            #expect(pricing["source"] as? String == "configured")
            #expect(pricing["per_request_usd"] as? String == "0.001")
            #expect((llama["metadata"] as? [String: Any])?["context_length"] as? Int == 8192)
            let mistral = try #require(models.first { $0["name"] as? String == "mistral:latest" })
            #expect((mistral["pricing"] as? [String: Any])?["source"] as? String == "default")
            #expect((mistral["pricing"] as? [String: Any])?["per_request_usd"] as? String == "0.01")
            let unserved = try #require(models.first { $0["name"] as? String == "gpt-private" })
            #expect(unserved["served_by_ollama"] as? Bool == false)
        }
    }

    @Test func healthChecksNeedNoKey() async throws {
        try await GatewayHarness.with { h in
            let health = try await h.send(.GET, "/health")
            #expect(health.status == 200)
            #expect(health.body.contains(#""database":"ok""#))
            let ollama = try await h.send(.GET, "/health/ollama")
            #expect(ollama.status == 200)
            #expect(ollama.body.contains(#""version":"0.5.1""#))
            #expect(ollama.body.contains("latency_ms"))
        }
        try await GatewayHarness.with(upstreamDown: true) { h in
            let ollama = try await h.send(.GET, "/health/ollama")
            #expect(ollama.status == 503)
            #expect(ollama.body.contains("unavailable"))
        }
    }
}

