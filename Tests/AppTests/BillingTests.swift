import AsyncHTTPClient
import Core
import Foundation
import NIOCore
import TestSupport
import Testing

@Suite("Gateway: metering and budgets")
struct BillingTests {
    @Test func costUsesProviderCountsAndEveryPriceComponent() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            // $0.001 + $0.002 flat, $1.50 / 1M input, $2.25 / 1M output.
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(
                perRequest: Money(nanos: 1_000_000), perModel: Money(nanos: 2_000_000),
                inputPer1M: Money(nanos: 1_500_000_000), outputPer1M: Money(nanos: 2_250_000_000)), effectiveFromMicros: nowMicros())
            let r = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(r.status == 200)
            #expect(r.headers.first(name: "content-type") == "application/x-ndjson")
            let requestId = try #require(r.headers.first(name: "x-request-id"))
            let rows = try await h.ledger()
            #expect(rows.count == 1)
            let row = try #require(rows.first)
            #expect(row.requestId == requestId)
            #expect(row.outcome == "ok" && row.status == 200)
            #expect(row.prompt == 26 && row.completion == 8 && row.source == "provider")
            // 3,000,000 + 26 × 1,500 + 8 × 2,250 = 3,057,000 nano-dollars.
            #expect(row.cost == 3_057_000)
            #expect(try await h.budget(customer).spent == Money(nanos: 3_057_000))
        }
    }

    @Test func modelsWithoutPricesCostTheDefaultPerRequest() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            #expect(try await h.send(.POST, "/api/generate", key: key, json: #"{"model":"mistral","prompt":"hi","stream":false}"#).status == 200)
            #expect(try await h.send(.POST, "/api/embed", key: key, json: #"{"model":"all-minilm","input":["a","b"]}"#).status == 200)
            let legacy = try await h.send(.POST, "/api/embeddings", key: key, json: #"{"model":"all-minilm","prompt":"hello"}"#)
            #expect(legacy.body.contains("embedding"))
            let rows = try await h.ledger()
            #expect(rows.map(\.cost) == [10_000_000, 10_000_000, 10_000_000])
            #expect(rows[1].prompt == 16 && rows[1].source == "provider")
            #expect(rows[2].source == "estimated" && rows[2].prompt > 0)
            #expect(try await h.budget(customer).spent == Money(nanos: 30_000_000))
        }
    }

    @Test func aNewPriceAppliesToLaterRequestsOnly() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 100)), effectiveFromMicros: nowMicros())
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            _ = try await h.store.setPrice(model: "llama3", price: ModelPrice(perRequest: Money(nanos: 200)), effectiveFromMicros: nowMicros())
            _ = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(try await h.ledger().map(\.cost) == [100, 200])
        }
    }

    @Test func anExhaustedBudgetGets402AndTheUpstreamIsNeverCalled() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: 30_000_000) // three default-priced requests
            for _ in 0..<3 { #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200) }
            let refused = try await h.send(.POST, "/api/chat", key: key, json: chatBody)
            #expect(refused.status == 402)
            #expect(refused.body.contains("budget exceeded"))
            #expect(h.fake.recorder.calls("/api/chat") == 3)
            let rows = try await h.ledger()
            #expect(rows.map(\.outcome) == ["ok", "ok", "ok", "budget_exceeded"])
            #expect(rows.last?.cost == 0 && rows.last?.status == 402)
            #expect(try await h.budget(customer).spent == Money(nanos: 30_000_000))
        }
    }

    @Test(arguments: Backend.allCases)
    func aHundredConcurrentRequestsAgainstABudgetForTwentyAdmitExactlyTwenty(backend: Backend) async throws {
        try await GatewayHarness.with(backend: backend) { h in
            let (customer, key) = try await h.customer(budgetNanos: 20 * 10_000_000)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<100 {
                    group.addTask {
                        try await h.send(.POST, i % 2 == 0 ? "/api/chat" : "/api/generate", key: key,
                                         json: i % 2 == 0 ? chatBody : #"{"model":"llama3","prompt":"x","stream":false}"#).status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 200 }.count == 20)
            #expect(statuses.filter { $0 == 402 }.count == 80)
            let status = try await h.budget(customer)
            #expect(status.spent == Money(nanos: 200_000_000))
            #expect(status.held == .zero)
            #expect(h.fake.recorder.calls("/api/chat") + h.fake.recorder.calls("/api/generate") == 20)
            let rows = try await h.ledger()
            #expect(rows.count == 100)
            #expect(rows.reduce(0) { $0 + $1.cost } == 200_000_000)
        }
    }

    @Test func unlimitedCustomersAreNeverRefused() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            for _ in 0..<5 { #expect(try await h.send(.POST, "/api/chat", key: key, json: chatBody).status == 200) }
        }
    }
}
