import AsyncHTTPClient
import Core
import FakeUpstream
import Foundation
import NIOCore
import TestSupport
import Testing

func jsonObject(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
}

let providerKeys = ["OPENAI_API_KEY": "sk-operator-openai", "ANTHROPIC_API_KEY": "sk-ant-operator"]
let anthropicHeaders = [("anthropic-version", "2023-06-01")]

@Suite("Gateway: OpenAI and Anthropic dialects")
struct DialectTests {
    @Test func openAIChatOnAnOllamaModel() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let plain = try await h.send(.POST, "/v1/chat/completions", key: key,
                                         json: #"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(plain.status == 200)
            let completion = try jsonObject(plain.body)
            let message = ((completion["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])
            #expect(message?["content"] as? String == "The sky is blue because of Rayleigh scattering.")
            #expect((completion["usage"] as? [String: Any])?["prompt_tokens"] as? Int == 26)
            let stream = try await h.send(.POST, "/v1/chat/completions", key: key,
                json: #"{"model":"llama3","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(stream.headers.first(name: "content-type") == "text/event-stream")
            #expect(stream.body.hasSuffix("data: [DONE]\n\n"))
            #expect(stream.body.contains(#""choices":[],"usage":{"prompt_tokens":26,"completion_tokens":8,"total_tokens":34}"#))
            let noUsage = try await h.send(.POST, "/v1/chat/completions", key: key,
                json: #"{"model":"llama3","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(!noUsage.body.contains("usage"))
            let rows = try await h.ledger()
            #expect(rows.count == 3 && rows.allSatisfy { $0.prompt == 26 && $0.completion == 8 && $0.outcome == "ok" })
            #expect(try await h.ledgerRoutes().allSatisfy { $0.dialect == "openai" && $0.provider == "ollama" })
        }
    }

    @Test func anthropicMessagesOnAnOllamaModel() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let plain = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"llama3","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#, headers: anthropicHeaders)
            #expect(plain.status == 200)
            let message = try jsonObject(plain.body)
            #expect(message["type"] as? String == "message")
            #expect((message["usage"] as? [String: Any])?["output_tokens"] as? Int == 8)
            let stream = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"llama3","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                headers: anthropicHeaders)
            let events = stream.body.components(separatedBy: "\n\n").compactMap { $0.split(separator: "\n").first }
            #expect(events.first == "event: message_start")
            #expect(events.last == "event: message_stop")
            #expect(stream.body.contains(#""usage":{"input_tokens":26,"output_tokens":8}"#))
            #expect(try await h.ledgerRoutes().allSatisfy { $0.dialect == "anthropic" && $0.provider == "ollama" })
        }
    }

    @Test func errorsComeInEachDialectsShape() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: 10_000_000) // one default-priced request
            let chat = #"{"model":"llama3","messages":[{"role":"user","content":"hi"}]}"#
            let msg = #"{"model":"llama3","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
            var r = try await h.send(.POST, "/v1/chat/completions", key: "sk_bad", json: chat)
            #expect(r.status == 401)
            #expect(((try jsonObject(r.body))["error"] as? [String: Any])?["code"] as? String == "invalid_api_key")
            r = try await h.send(.POST, "/v1/messages", key: "sk_bad", json: msg, headers: anthropicHeaders)
            #expect(r.status == 401)
            #expect(r.body == #"{"type":"error","error":{"type":"authentication_error","message":"invalid API key"}}"#)
            r = try await h.send(.POST, "/v1/chat/completions", key: key, json: #"{"model":"llama9","messages":[{"role":"user","content":"x"}]}"#)
            #expect(r.status == 404)
            #expect(((try jsonObject(r.body))["error"] as? [String: Any])?["code"] as? String == "model_not_found")
            r = try await h.send(.POST, "/v1/messages", key: key, json: #"{"model":"llama9","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(r.status == 404)
            #expect(r.body.contains(#""type":"not_found_error""#))
            r = try await h.send(.POST, "/v1/chat/completions", key: key, json: "{nope")
            #expect(r.status == 400 && r.body.contains("invalid_request_error"))
            r = try await h.send(.POST, "/v1/messages", key: key, json: #"{"model":"llama3","messages":[{"role":"user","content":"x"}]}"#)
            #expect(r.status == 400 && r.body.contains("max_tokens"))
            #expect(try await h.send(.POST, "/v1/chat/completions", key: key, json: chat).status == 200)
            r = try await h.send(.POST, "/v1/chat/completions", key: key, json: chat)
            #expect(r.status == 402)
            #expect(((try jsonObject(r.body))["error"] as? [String: Any])?["type"] as? String == "insufficient_quota")
            r = try await h.send(.POST, "/v1/messages", key: key, json: msg, headers: anthropicHeaders)
            #expect(r.status == 402)
            #expect(r.body.contains(#""type":"billing_error""#))
        }
    }

    @Test func aFailureMidStreamIsTheDialectsInStreamError() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let openai = try await h.send(.POST, "/v1/chat/completions", key: key,
                                          json: #"{"model":"fail-midstream","stream":true,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(openai.body.hasSuffix("data: {\"error\":{\"message\":\"an error was encountered while running the model\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n"))
            let anthropic = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"truncated","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(anthropic.body.contains("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\""))
            #expect(try await eventually { try await h.ledger().count == 2 })
            // Two chunks were delivered before each failure: the flat default price and those two
            // tokens are charged, as estimates.
            #expect(try await h.ledger().allSatisfy {
                $0.outcome == "upstream_error" && $0.cost == 10_000_000 && $0.completion == 2 && $0.source == "estimated"
            })
        }
    }

    @Test func openAIModelsPassThroughWithTheOperatorsKeyAndCatalogPrices() async throws {
        try await GatewayHarness.with(environment: providerKeys) { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            let stream = try await h.send(.POST, "/v1/chat/completions", key: key,
                                          json: #"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(stream.status == 200)
            #expect(stream.body.contains("Rayleigh"))
            #expect(!stream.body.contains("\"usage\":{"), "the usage chunk the client did not ask for is dropped")
            #expect(stream.body.hasSuffix("data: [DONE]\n\n"))
            #expect(h.fake.recorder.lastAuthorization == "Bearer sk-operator-openai")
            let plain = try await h.send(.POST, "/v1/chat/completions", key: key,
                                         json: #"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#)
            #expect(plain.body.contains("fp_b40fb1c6fb"), "non-streaming answers pass through byte for byte")
            #expect(try await eventually { try await h.ledger().count == 2 })
            let rows = try await h.ledger()
            // gpt-4o-mini: 10 uncached × $0.15 + 4 cached × $0.075 + 8 × $0.60 per 1M = 6,600 nano-dollars.
            #expect(rows.allSatisfy { $0.prompt == 14 && $0.completion == 8 && $0.cost == 6_600 && $0.source == "provider" })
            #expect(try await h.ledgerRoutes().allSatisfy { $0.provider == "openai" && $0.cached == 4 })
            #expect(try await h.budget(customer).spent == Money(nanos: 13_200))
            let missing = try await h.send(.POST, "/v1/chat/completions", key: key, json: #"{"model":"gpt-nope","messages":[{"role":"user","content":"x"}]}"#)
            #expect(missing.status == 404)
            #expect(missing.body.contains("model_not_found"))
        }
    }

    @Test func claudeModelsPassThroughWithTheOperatorsKey() async throws {
        try await GatewayHarness.with(environment: providerKeys) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let stream = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"claude-sonnet-4-5","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
                headers: anthropicHeaders)
            #expect(stream.status == 200)
            #expect(stream.body.hasPrefix("event: message_start"))
            #expect(stream.body.contains("event: ping"))
            #expect(h.fake.recorder.lastAuthorization == "sk-ant-operator")
            let plain = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"claude-sonnet-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#)
            #expect(plain.status == 200)
            #expect(try await eventually { try await h.ledger().count == 2 })
            // claude-sonnet-4-5: 11 × $3 + 8 × $15 per 1M = 153,000 nano-dollars.
            #expect(try await h.ledger().allSatisfy { $0.prompt == 11 && $0.completion == 8 && $0.cost == 153_000 })
            let overloaded = try await h.send(.POST, "/v1/messages", key: key,
                json: #"{"model":"claude-overloaded","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#)
            #expect(overloaded.status == 529)
            #expect(overloaded.body.contains("overloaded_error"))
        }
    }

    @Test func withoutProviderKeysOpenAINamesGoToOllama() async throws {
        try await GatewayHarness.with { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let r = try await h.send(.POST, "/v1/chat/completions", key: key, json: #"{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}"#)
            #expect(r.status == 404)
            #expect(h.fake.recorder.calls("/v1/chat/completions") == 0)
            #expect(h.fake.recorder.calls("/api/chat") == 1)
        }
    }

    @Test func modelListsInBothShapesWithPricing() async throws {
        try await GatewayHarness.with(environment: providerKeys) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let openai = try jsonObject(try await h.send(.GET, "/v1/models", key: key).body)
            #expect(openai["object"] as? String == "list")
            let data = try #require(openai["data"] as? [[String: Any]])
            #expect(data.contains { $0["id"] as? String == "llama3:latest" && $0["owned_by"] as? String == "ollama" })
            #expect(data.contains { $0["id"] as? String == "gpt-4o" && ($0["pricing"] as? [String: Any])?["source"] as? String == "catalog" })
            let anthropic = try jsonObject(try await h.send(.GET, "/v1/models", key: key, headers: anthropicHeaders).body)
            #expect(anthropic["has_more"] as? Bool == false)
            #expect((anthropic["data"] as? [[String: Any]])?.first?["type"] as? String == "model")
            let one = try await h.send(.GET, "/v1/models/llama3:latest", key: key)
            let oneObject = try jsonObject(one.body)
            #expect(one.status == 200 && oneObject["id"] as? String == "llama3:latest")
            #expect(try await h.send(.GET, "/v1/models/nothing", key: key).status == 404)
            let embed = try await h.send(.POST, "/v1/embeddings", key: key, json: #"{"model":"all-minilm","input":["a","b"]}"#)
            #expect((try jsonObject(embed.body))["object"] as? String == "list")
        }
    }
}
