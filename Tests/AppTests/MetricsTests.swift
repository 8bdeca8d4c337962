import Core
import Foundation
import Testing

/// Parses Prometheus text into `name{labels}` → value.
func samples(_ text: String) -> [String: Double] {
    var result: [String: Double] = [:]
    for line in text.split(separator: "\n") where !line.hasPrefix("#") {
        guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
        result[String(line[..<space])] = value
    }
    return result
}

@Suite("Gateway: metrics")
struct MetricsTests {
    @Test func countersMatchTheTrafficSent() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: 30_000_000) // three default-priced requests
            for _ in 0..<3 { #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200) }
            #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 402)
            #expect(try await h.send(.POST, "/api/chat", key: "sk_bad", json: chatBody).status == 401)
            let scrape = try await h.send(.GET, "/metrics")
            #expect(scrape.status == 200)
            #expect(scrape.headers.first(name: "content-type")?.hasPrefix("text/plain") == true)
            let s = samples(scrape.body)
            #expect(s[#"lmsvr_requests_total{route="/api/chat",dialect="ollama",status="200"}"#] == 3)
            #expect(s[#"lmsvr_requests_total{route="/api/chat",dialect="ollama",status="402"}"#] == 1)
            #expect(s[#"lmsvr_requests_total{route="/api/chat",dialect="ollama",status="401"}"#] == 1)
            #expect(s[#"lmsvr_metered_requests_total{dialect="ollama",provider="ollama",model="llama3",outcome="ok",status="200"}"#] == 3)
            #expect(s[#"lmsvr_tokens_total{model="llama3",kind="prompt"}"#] == 78)
            #expect(s[#"lmsvr_tokens_total{model="llama3",kind="completion"}"#] == 24)
            #expect(s[#"lmsvr_cost_nanodollars_total{model="llama3"}"#] == 30_000_000)
            #expect(s["lmsvr_budget_refusals_total"] == 1)
            #expect(s["lmsvr_open_streams"] == 0)
            #expect(scrape.body.contains("lmsvr_request_duration_seconds_bucket"))
            #expect(scrape.body.contains("lmsvr_time_to_first_byte_seconds_bucket"))
        }
    }

    @Test func upstreamErrorsAreCountedByKind() async throws {
        try await GatewayHarness.with(upstreamDown: true) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            let s = samples(try await h.send(.GET, "/metrics").body)
            #expect(s[#"lmsvr_upstream_errors_total{provider="ollama",kind="unreachable"}"#] == 1)
        }
    }

    @Test func poolUseIsReportedOnPostgres() async throws {
        try await GatewayHarness.with(backend: .postgres) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            let s = samples(try await h.send(.GET, "/metrics").body)
            #expect((s[#"lmsvr_db_pool_connections{state="open"}"#] ?? 0) >= 1)
            #expect(s["lmsvr_db_pool_waiting_requests"] == 0)
        }
    }
}
