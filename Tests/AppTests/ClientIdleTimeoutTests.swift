import App
import Core
import FakeUpstream
import Foundation
import Testing

/// CLIENT_IDLE_TIMEOUT_SECONDS: idle keep-alive connections and requests that stop arriving are
/// closed; responses being written, streams included, never are.
@Suite("Gateway: client idle timeout")
struct ClientIdleTimeoutTests {
    @Test func anIdleKeepAliveConnectionIsClosedAfterTheTimeout() async throws {
        // 3 s, not 1: the whole suite runs at once on two cores, and a connection that has not
        // sent its first request within the timeout is itself idle.
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "3"]) { h in
            let socket = try RawSocket(port: h.gatewayPort)
            defer { socket.close() }
            // Two requests, one after the other, on the connection: kept alive after an answer...
            for _ in 0..<2 {
                try socket.send("GET /health/live HTTP/1.1\r\nHost: lmsvr\r\n\r\n")
                let answer = try #require(await socket.read { String(decoding: $0, as: UTF8.self).contains(#"{"status":"ok"}"#) })
                #expect(String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 200"))
            }
            // ...and closed once idle for the timeout (without it, the read times out after 10 s).
            #expect(await socket.readUntilClosed() != nil, "the idle connection was never closed")
        }
    }

    @Test func aRequestThatStopsArrivingMidHeadIsCutOff() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"]) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let socket = try RawSocket(port: h.gatewayPort)
            defer { socket.close() }
            // Slowloris: a head that is never finished holds the connection only as long as the timeout.
            try socket.send("POST /api/chat HTTP/1.1\r\nHost: lmsvr\r\nAuthorization: Bearer \(key)\r\nContent-Le")
            #expect(await socket.readUntilClosed() != nil, "the stalled request was never cut off")
            #expect(try await h.ledger().isEmpty)
        }
    }

    @Test func aRequestWhoseBodyStopsArrivingIsCutOffUnbilled() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"]) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let socket = try RawSocket(port: h.gatewayPort)
            defer { socket.close() }
            try socket.send("POST /api/chat HTTP/1.1\r\nHost: lmsvr\r\nAuthorization: Bearer \(key)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(chatBody.utf8.count)\r\n\r\n"
                + String(chatBody.prefix(20)))
            #expect(await socket.readUntilClosed() != nil, "the stalled body was never cut off")
            // Never priced, never held, never sent upstream.
            #expect(h.fake.recorder.lastBody("/api/chat") == nil)
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func aStreamLongerThanTheTimeoutToAClientThatSendsNothingIsDeliveredAndBilled() async throws {
        var upstream = FakeUpstream.Options()
        upstream.chunks = 4
        upstream.dripMillis = 800 // ~3 s of stream against a 1 s idle timeout
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"], upstreamOptions: upstream) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let r = try await h.stream("/api/chat", key: key, json: #"{"model":"slowstream","messages":[]}"#)
            #expect(r.status == 200)
            #expect(try ndjsonLines(r.body).last?["done"] as? Bool == true)
            #expect(try await eventually { try await h.ledger().count == 1 })
            #expect(try await h.ledger().first?.outcome == "ok")
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    /// A model that takes longer to answer than the idle timeout (Ollama loading a large model):
    /// the request has been read, so the connection is not idle while the gateway waits.
    @Test func anUpstreamSlowerToAnswerThanTheTimeoutIsWaitedForAndBilled() async throws {
        var upstream = FakeUpstream.Options()
        upstream.slowSeconds = 2.5
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"], upstreamOptions: upstream) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"slow","messages":[],"stream":false}"#)
            #expect(r.status == 200)
            #expect(try await eventually { try await h.ledger().count == 1 })
            #expect(try await h.ledger().first?.outcome == "ok")
            let status = try await h.budget(customer)
            #expect(status.held == .zero && status.spent > .zero)
        }
    }

    @Test func zeroKeepsIdleConnectionsOpen() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "0"]) { h in
            let socket = try RawSocket(port: h.gatewayPort, readTimeout: 2)
            defer { socket.close() }
            try socket.send("GET /health/live HTTP/1.1\r\nHost: lmsvr\r\n\r\n")
            // Still open when the 2 s read timeout gives up.
            #expect(await socket.readUntilClosed() == nil)
            #expect(try Configuration(environment: [:]).clientIdleTimeoutSeconds == 120)
        }
    }
}
