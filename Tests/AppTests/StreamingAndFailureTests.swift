import AsyncHTTPClient
import Core
import FakeUpstream
import Foundation
import NIOCore
import PGStore
import TestSupport
import Testing

/// Polls `condition` for up to five seconds (for effects that land after a response ends).
func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
    for _ in 0..<100 {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}

@Suite("Gateway: streaming and failures")
struct StreamingAndFailureTests {
    @Test func eachChunkIsForwardedAsItArrives() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            var request = HTTPClientRequest(url: h.base + "/api/chat")
            request.method = .POST
            request.headers.add(name: "authorization", value: "Bearer \(key)")
            request.body = .bytes(ByteBuffer(string: #"{"model":"drip","messages":[]}"#))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
            var firstChunkAt: ContinuousClock.Instant?
            var text = ""
            for try await chunk in response.body {
                if firstChunkAt == nil { firstChunkAt = .now }
                text += String(buffer: chunk)
            }
            let lastSent = try #require(h.fake.recorder.lastChunkSentAt(model: "drip"))
            // The client held the first chunk before the upstream had even sent its last one.
            #expect(try #require(firstChunkAt) < lastSent)
            #expect(text.split(separator: "\n").count == 9)
            #expect(try await eventually { try await h.ledger().first?.outcome == "ok" })
        }
    }

    @Test func aClientThatDisconnectsCancelsTheUpstreamAndIsBilledWhatWasDelivered() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup)
            let reader = Task {
                var request = HTTPClientRequest(url: h.base + "/api/chat")
                request.method = .POST
                request.headers.add(name: "authorization", value: "Bearer \(key)")
                request.body = .bytes(ByteBuffer(string: #"{"model":"drip","messages":[]}"#))
                let response = try await client.execute(request, timeout: .seconds(30))
                for try await _ in response.body { return } // walk away after the first chunk
            }
            try await reader.value
            try await client.shutdown() // closes the connection mid-stream
            #expect(try await eventually { h.fake.recorder.cancelledStreams == 1 })
            #expect(try await eventually { try await h.ledger().count == 1 })
            let row = try #require(try await h.ledger().first)
            #expect(row.outcome == "client_cancelled")
            #expect(row.source == "estimated")
            #expect(row.completion >= 1 && row.completion < 8)
            #expect(row.cost == 10_000_000) // the flat default price; no token prices set
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    /// The chunk whose write fails (the client reset the connection) was counted by the relay
    /// but never delivered: the charge stops at what the client had.
    @Test func theChunkWhoseWriteFailsIsNotCharged() async throws {
        // Chunks 3 s apart: the reset lands long before the second chunk is written, even with
        // the whole suite running (written before the reset, it would be delivered as far as the
        // gateway can tell, and charged).
        var upstream = FakeUpstream.Options()
        upstream.dripMillis = 3000
        try await GatewayHarness.with(upstreamOptions: upstream) { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            let body = #"{"model":"drip","messages":[]}"#
            let socket = try RawSocket(port: h.gatewayPort)
            try socket.send("POST /api/chat HTTP/1.1\r\nHost: lmsvr\r\nAuthorization: Bearer \(key)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
            // The head and the first line ("The ", one token).
            let received = try #require(await socket.read(until: { String(decoding: $0, as: UTF8.self).contains("}\n") },
                                                          thenReset: true))
            #expect(String(decoding: received, as: UTF8.self).contains(#""content":"The ""#))
            #expect(try await eventually { try await h.ledger().count == 1 })
            let row = try #require(try await h.ledger().first)
            #expect(row.outcome == "client_cancelled")
            #expect(row.completion == 1) // the second chunk, whose write failed, is not counted
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func malformedJSONIs400AndNeverReachesTheUpstream() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model": "llama3", "messages": ["#)
            #expect(r.status == 400)
            #expect(r.body == #"{"error":"invalid JSON in request body"}"#)
            #expect(try await h.send(.POST, "/api/chat", key: key, json: #"{"messages":[]}"#).body == #"{"error":"model is required"}"#)
            #expect(h.fake.recorder.totalCalls == 0)
            #expect(try await h.ledger().isEmpty)
        }
    }

    @Test func aBodyOverTheLimitIs413() async throws {
        try await GatewayHarness.with(environment: ["MAX_BODY_BYTES": "2048"]) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let big = #"{"model":"llama3","prompt":""# + String(repeating: "x", count: 5000) + #""}"#
            let r = try await h.send(.POST, "/api/generate", key: key, json: big)
            #expect(r.status == 413)
            #expect(r.body.contains("2048"))
            #expect(h.fake.recorder.totalCalls == 0)
        }
    }

    @Test func anUnknownModelIsTheUpstreams404AndNotCharged() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"llama9","messages":[]}"#)
            #expect(r.status == 404)
            #expect(r.body == #"{"error":"model 'llama9' not found"}"#)
            #expect(try await h.ledger().count == 1)
            let row = try #require(try await h.ledger().first)
            #expect(row.outcome == "upstream_error" && row.status == 404 && row.cost == 0)
            #expect(try await h.budget(customer).spent == .zero)
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func anUnreachableUpstreamIs502PromptlyUnchargedWithTheHoldReleased() async throws {
        try await GatewayHarness.with(upstreamDown: true) { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(r.status == 502)
            #expect(r.body.contains("upstream unreachable"))
            let row = try #require(try await h.ledger().first)
            #expect(row.outcome == "upstream_error" && row.cost == 0)
            let status = try await h.budget(customer)
            #expect(status.spent == .zero && status.held == .zero)
        }
    }

    @Test func anUpstream500IsPassedOnAndNotCharged() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/generate", key: key, json: #"{"model":"error500","prompt":"x"}"#)
            #expect(r.status == 500)
            #expect(r.body == #"{"error":"an error was encountered while running the model"}"#)
            #expect(try await h.ledger().first?.cost == 0)
            #expect(try await h.budget(customer).spent == .zero)
        }
    }

    @Test(arguments: ["fail-midstream", "truncated"])
    func aStreamThatFailsMidwayEndsWithAnErrorLineAndIsChargedWhatItDelivered(model: String) async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"\#(model)","messages":[]}"#)
            #expect(r.status == 200)
            let lines = r.body.split(separator: "\n")
            #expect(lines.count == 3)
            #expect(lines.last?.hasPrefix(#"{"error":"#) == true)
            #expect(try await eventually { try await h.ledger().first?.outcome == "upstream_error" })
            // Two chunks reached the client before the failure: flat fee plus two tokens, estimated.
            let row = try #require(try await h.ledger().first)
            #expect(row.cost == 10_000_000 && row.completion == 2 && row.source == "estimated")
            #expect(try await h.budget(customer).spent == Money(nanos: 10_000_000))
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    /// A whole answer that fails before its end never reaches the client as a cut body: the
    /// client gets 502 and nothing stays held.
    @Test func aWholeAnswerCutShortIsAnErrorAndNothingStaysHeld() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"truncated","messages":[],"stream":false}"#)
            #expect(r.status == 502)
            #expect(r.body.contains(#""error""#))
            #expect(try await eventually { try await h.ledger().first?.outcome == "upstream_error" })
            let row = try #require(try await h.ledger().first)
            #expect(try await h.budget(customer).spent == Money(nanos: row.cost))
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    /// A whole answer longer than the gateway reads before answering is passed on as it arrives,
    /// whole, and charged for all of it.
    @Test func aWholeAnswerLongerThanOneWriteIsPassedOnWholeAndCharged() async throws {
        var options = FakeUpstream.Options()
        options.bigChunks = 200 // 200 KiB of text, past the 64 KiB read before answering
        try await GatewayHarness.with(upstreamOptions: options) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let r = try await h.send(.POST, "/api/generate", key: key,
                                     json: #"{"model":"big","prompt":"x","stream":false}"#)
            #expect(r.status == 200)
            #expect(r.body.utf8.count > 200 * 1024)
            #expect(r.body.hasSuffix("}") && r.body.contains(#""eval_count":200"#))
            #expect(try await eventually { try await h.ledger().first?.outcome == "ok" })
            let row = try #require(try await h.ledger().first)
            #expect(row.completion == 200)
            #expect(try await h.budget(customer).spent == Money(nanos: row.cost))
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func aSilentUpstreamIs504AfterTheReadTimeout() async throws {
        var options = FakeUpstream.Options()
        options.slowSeconds = 3
        try await GatewayHarness.with(environment: ["UPSTREAM_READ_TIMEOUT_SECONDS": "1"], upstreamOptions: options) { h in
            let (customer, key) = try await h.customer(budgetNanos: 100_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"slow","messages":[]}"#)
            #expect(r.status == 504)
            #expect(r.body.contains("timed out"))
            #expect(try await h.ledger().first?.cost == 0)
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func anUnavailableDatabaseIs503AndTheUpstreamIsNotCalled() async throws {
        try await GatewayHarness.with(backend: .postgres, environment: ["DB_POOL_WAIT_MS": "500"]) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200)
            let name = String(h.databaseURL.split(separator: "/").last!)
            let admin = try await PGDatabase.connect(conninfo: try TestDatabases.postgresAdminURL(), size: 1)
            _ = try await admin.withConnection { c in
                try c.executeScript("ALTER DATABASE \(name) ALLOW_CONNECTIONS false")
                try c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", .text(name))
            }
            let calls = h.fake.recorder.calls("/api/chat")
            let r = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(r.status == 503)
            #expect(r.body.contains("unavailable"))
            #expect(h.fake.recorder.calls("/api/chat") == calls)
            #expect(try await h.send(.GET, "/health").status == 503)
            #expect(try await h.send(.GET, "/health/live").status == 200) // out of rotation, not restarted
            _ = try await admin.withConnection { try $0.executeScript("ALTER DATABASE \(name) ALLOW_CONNECTIONS true") }
            await admin.shutdown()
            // It recovers by itself once the database is back.
            #expect(try await eventually { try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200 })
        }
    }
}
