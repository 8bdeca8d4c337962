import Core
import Foundation
import JSONKit
import Testing
@testable import Providers

typealias JSONObject = [String: Any]

/// A request or chunk as the gateway reads it.
func value(_ text: String) throws -> JSONValue {
    try JSONDocument.parse(text, limits: .request).root
}

/// What the gateway wrote, read back with Foundation for checking.
func object(_ bytes: [UInt8]) throws -> JSONObject {
    try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? JSONObject)
}

func object(_ json: JSON) throws -> JSONObject { try object(json.bytes) }

func int(_ any: Any?) -> Int64? { (any as? NSNumber)?.int64Value }

/// Parses the `data:` payloads of an SSE text.
func dataPayloads(_ sse: String) -> [String] {
    sse.components(separatedBy: "\n\n").compactMap { event in
        event.split(separator: "\n").first { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
    }
}

func eventNames(_ sse: String) -> [String] {
    sse.components(separatedBy: "\n\n").compactMap { event in
        event.split(separator: "\n").first { $0.hasPrefix("event: ") }.map { String($0.dropFirst(7)) }
    }
}

// Ollama chunks from wire-formats §1.2 (docs), used as recorded input.
let ollamaChunks = [
    #"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"The"},"done":false}"#,
    #"{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":" sky"},"done":false}"#,
    #"{"model":"llama3.2","created_at":"2025-07-07T20:22:19.19314Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":182242375,"load_duration":41295167,"prompt_eval_count":169,"prompt_eval_duration":24573166,"eval_count":15,"eval_duration":115959084}"#,
]
let ollamaToolChunk = #"{"model":"llama3.2","created_at":"2025-07-07T20:22:19.184789Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":false}"#

// MARK: OpenAI

struct OpenAITranslationTests {
    @Test func requestFieldsMapToOllama() throws {
        let request = try value(#"""
        {"model":"llama3","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":256,"max_tokens":9,
         "temperature":0.2,"top_p":0.9,"seed":1,"stop":"\n\n","response_format":{"type":"json_object"},
         "reasoning_effort":"minimal",
         "messages":[{"role":"developer","content":"Be terse."},
          {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBOR"}}]},
          {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
          {"role":"tool","tool_call_id":"call_1","content":"18C"}],
         "tools":[{"type":"function","function":{"name":"get_weather","strict":true,"parameters":{"type":"object"}}}]}
        """#)
        let t = try OpenAIRequestTranslator.translate(request, model: "llama3")
        #expect(t.stream && t.includeUsage && t.requestedOutput == 256)
        let body = try object(t.body.json(outputBound: 200, policy: OllamaOptionPolicy()))
        #expect(body["model"] as? String == "llama3")
        #expect(body["stream"] as? Bool == true)
        #expect(body["format"] as? String == "json")
        #expect(body["think"] as? String == "low")
        let options = try #require(body["options"] as? JSONObject)
        #expect(int(options["num_predict"]) == 200) // the bound the gateway held, not the request's
        #expect(options["stop"] as? [String] == ["\n\n"])
        let messages = try #require(body["messages"] as? [JSONObject])
        #expect(messages.map { $0["role"] as? String } == ["system", "user", "assistant", "tool"])
        #expect(messages[1]["images"] as? [String] == ["iVBOR"])
        let call = try #require((messages[2]["tool_calls"] as? [JSONObject])?.first)
        #expect(((call["function"] as? JSONObject)?["arguments"] as? JSONObject)?["city"] as? String == "Paris")
        #expect(messages[3]["tool_name"] as? String == "get_weather")
        let tool = try #require((body["tools"] as? [JSONObject])?.first?["function"] as? JSONObject)
        #expect(tool["strict"] == nil)
    }

    @Test(arguments: [
        (#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#, "max_tokens"),
        (#"{"model":"m","messages":[]}"#, "messages"),
        (#"{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}"#, "n"),
        (#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#, "messages"),
        (#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"1","function":{"name":"f","arguments":"{not json"}}]}]}"#, "messages"),
    ])
    func invalidRequestsAreRefused(json: String, param: String) throws {
        let request = try value(json)
        #expect(throws: TranslationError.self) { try OpenAIRequestTranslator.translate(request, model: "m") }
        do { _ = try OpenAIRequestTranslator.translate(request, model: "m") } catch { #expect(error.param == param) }
    }

    @Test func streamIsOpenAIsSSEWithFinishUsageAndDone() throws {
        var encoder = OpenAIStreamEncoder(requestId: "req_abc", model: "llama3", created: 1733700000, includeUsage: true)
        let sse = try ollamaChunks.map { encoder.encode(try value($0)) }.joined()
        let payloads = dataPayloads(sse)
        #expect(payloads.count == 5)
        #expect(payloads[0] == #"{"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1733700000,"model":"llama3","choices":[{"index":0,"delta":{"role":"assistant","content":"The"},"logprobs":null,"finish_reason":null}]}"#)
        #expect(payloads[1].contains(#""delta":{"content":" sky"}"#))
        #expect(payloads[2].contains(#""delta":{},"logprobs":null,"finish_reason":"stop""#))
        #expect(payloads[3].hasSuffix(#""choices":[],"usage":{"prompt_tokens":169,"completion_tokens":15,"total_tokens":184}}"#))
        #expect(payloads[4] == "[DONE]")
        #expect(sse.hasSuffix("data: [DONE]\n\n"))
    }

    @Test func withoutIncludeUsageThereIsNoUsageChunk() throws {
        var encoder = OpenAIStreamEncoder(requestId: "req_abc", model: "llama3", created: 1, includeUsage: false)
        let payloads = dataPayloads(try ollamaChunks.map { encoder.encode(try value($0)) }.joined())
        #expect(payloads.count == 4)
        #expect(!payloads.contains { $0.contains("usage") })
    }

    @Test func toolCallsStreamWholeAndFinishWithToolCalls() throws {
        var encoder = OpenAIStreamEncoder(requestId: "req_abc", model: "llama3", created: 1, includeUsage: false)
        let sse = encoder.encode(try value(ollamaToolChunk)) + encoder.encode(try value(ollamaChunks[2]))
        let payloads = dataPayloads(sse)
        #expect(payloads[0].contains(#""tool_calls":[{"index":0,"id":"#))
        #expect(payloads[0].contains(#""type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Tokyo\"}"}}]"#))
        #expect(payloads[1].contains(#""finish_reason":"tool_calls""#))
    }

    @Test func anErrorLineBecomesTheSDKsErrorEvent() throws {
        var encoder = OpenAIStreamEncoder(requestId: "req_abc", model: "llama3", created: 1, includeUsage: false)
        let sse = encoder.encode(try value(#"{"error":"an error was encountered while running the model"}"#))
        #expect(sse == "data: {\"error\":{\"message\":\"an error was encountered while running the model\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n")
    }

    @Test func nonStreamingCompletionAndEmbeddings() throws {
        let answer = try value(#"{"model":"llama3","message":{"role":"assistant","content":"Hello!"},"done_reason":"length","done":true,"prompt_eval_count":26,"eval_count":7}"#)
        let completion = try object(OpenAIResponseTranslator.completion(answer, model: "llama3", requestId: "req_1", created: 5))
        #expect(completion["object"] as? String == "chat.completion")
        let choice = try #require((completion["choices"] as? [JSONObject])?.first)
        #expect(choice["finish_reason"] as? String == "length")
        #expect((choice["message"] as? JSONObject)?["content"] as? String == "Hello!")
        #expect(int((completion["usage"] as? JSONObject)?["total_tokens"]) == 33)
        let embedded = try object(OpenAIResponseTranslator.embeddings(
            try value(#"{"model":"all-minilm","embeddings":[[0.1,0.2],[0.3,0.4]],"prompt_eval_count":8}"#), model: "all-minilm"))
        #expect((embedded["data"] as? [JSONObject])?.count == 2)
        #expect(int((embedded["usage"] as? JSONObject)?["prompt_tokens"]) == 8)
    }

    @Test func aStreamCutAtTheLimitEndsWithLengthAndTheUsageBilled() throws {
        var encoder = OpenAIStreamEncoder(requestId: "req_abc", model: "llama3", created: 1, includeUsage: true)
        let sse = encoder.encode(try value(ollamaChunks[0])) + encoder.finish(doneReason: "length", prompt: 12, completion: 1)
        let payloads = dataPayloads(sse)
        #expect(payloads[1].contains(#""finish_reason":"length""#))
        #expect(payloads[2].hasSuffix(#""usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}"#))
        #expect(payloads.last == "[DONE]")
    }
}

// MARK: Anthropic

struct AnthropicTranslationTests {
    @Test func requestFieldsMapToOllama() throws {
        let request = try value(#"""
        {"model":"llama3","max_tokens":1024,"system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],
         "messages":[{"role":"user","content":"Hello"},
          {"role":"assistant","content":[{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"location":"Paris"}}]},
          {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"18C"},
                                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBOR"}},
                                    {"type":"text","text":"And now?"}]}],
         "tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object"}}],
         "stop_sequences":["END"],"temperature":0.5,"top_k":40,"thinking":{"type":"enabled","budget_tokens":2048},"stream":true}
        """#)
        let t = try AnthropicRequestTranslator.translate(request, model: "llama3")
        #expect(t.stream && t.requestedOutput == 1024)
        let ollamaBody = try object(t.body.json(outputBound: 1024, policy: OllamaOptionPolicy()))
        let messages = try #require(ollamaBody["messages"] as? [JSONObject])
        #expect(messages.map { $0["role"] as? String } == ["system", "user", "assistant", "tool", "user"])
        #expect(messages[0]["content"] as? String == "You are terse.")
        #expect(messages[3]["tool_call_id"] as? String == "toolu_01")
        #expect(messages[4]["images"] as? [String] == ["iVBOR"])
        #expect(messages[4]["content"] as? String == "And now?")
        let options = try #require(ollamaBody["options"] as? JSONObject)
        #expect(options["stop"] as? [String] == ["END"])
        #expect(int(options["top_k"]) == 40 && int(options["num_predict"]) == 1024)
        #expect(ollamaBody["think"] as? Bool == true)
        let tool = try #require((ollamaBody["tools"] as? [JSONObject])?.first?["function"] as? JSONObject)
        #expect(tool["parameters"] != nil)
    }

    @Test(arguments: [
        #"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
        #"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
        #"{"model":"m","max_tokens":5,"messages":[]}"#,
        #"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://x"}}]}]}"#,
        #"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
    ])
    func invalidRequestsAreRefused(json: String) throws {
        let request = try value(json)
        #expect(throws: TranslationError.self) { try AnthropicRequestTranslator.translate(request, model: "m") }
    }

    @Test func streamHasAnthropicsEventSequence() throws {
        var encoder = AnthropicStreamEncoder(requestId: "req_abc", model: "llama3", inputEstimate: 12)
        let sse = try ollamaChunks.map { encoder.encode(try value($0)) }.joined()
        #expect(eventNames(sse) == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                                    "content_block_stop", "message_delta", "message_stop"])
        let payloads = dataPayloads(sse)
        #expect(payloads[0].contains(#""usage":{"input_tokens":12,"output_tokens":0}"#))
        #expect(payloads[3] == #"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"The"}}"#)
        #expect(payloads[6] == #"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":169,"output_tokens":15}}"#)
    }

    @Test func toolUseGetsItsOwnBlockAndStopReason() throws {
        var encoder = AnthropicStreamEncoder(requestId: "req_abc", model: "llama3", inputEstimate: 1)
        let sse = encoder.encode(try value(ollamaChunks[0])) + encoder.encode(try value(ollamaToolChunk))
            + encoder.encode(try value(ollamaChunks[2]))
        #expect(eventNames(sse) == ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                                    "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"])
        let payloads = dataPayloads(sse)
        #expect(payloads[5].contains(#""index":1,"content_block":{"type":"tool_use""#))
        #expect(payloads[6].contains(#""partial_json":"{\"city\":\"Tokyo\"}""#))
        #expect(payloads[8].contains(#""stop_reason":"tool_use""#))
    }

    @Test func anErrorLineBecomesAnErrorEvent() throws {
        var encoder = AnthropicStreamEncoder(requestId: "req_abc", model: "llama3", inputEstimate: 1)
        let sse = encoder.encode(try value(#"{"error":"boom"}"#))
        #expect(sse.hasSuffix("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n"))
    }

    @Test func nonStreamingMessage() throws {
        let answer = try value(#"{"model":"llama3","message":{"role":"assistant","content":"Hi","tool_calls":[{"id":"call_1","function":{"name":"f","arguments":{"a":1}}}]},"done_reason":"stop","done":true,"prompt_eval_count":26,"eval_count":7}"#)
        let message = try object(AnthropicResponseTranslator.message(answer, model: "llama3", requestId: "req_1"))
        #expect(message["type"] as? String == "message")
        #expect(message["stop_reason"] as? String == "tool_use")
        let content = try #require(message["content"] as? [JSONObject])
        #expect(content.map { $0["type"] as? String } == ["text", "tool_use"])
        #expect(int((message["usage"] as? JSONObject)?["input_tokens"]) == 26)
    }
}

// MARK: Pass-through meters

struct MeterTests {
    // Recorded OpenAI stream, wire-formats §4.3.
    static let openAIStream = """
    data: {"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}

    data: {"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[{"index":0,"delta":{"content":"I'm"},"logprobs":null,"finish_reason":null}]}

    data: {"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}

    data: {"id":"chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL","object":"chat.completion.chunk","created":1727346168,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_5050236cbd","choices":[],"usage":{"prompt_tokens":14,"completion_tokens":30,"total_tokens":44,"completion_tokens_details":{"reasoning_tokens":0}}}

    data: [DONE]


    """

    @Test(arguments: [1, 7, 64, 100_000])
    func openAIUsageIsMeteredAndDroppedWhenNotAsked(chunkSize: Int) {
        for asked in [true, false] {
            var splitter = SSESplitter()
            var meter = OpenAIStreamMeter(clientAskedForUsage: asked)
            var forwarded = ""
            let bytes = Array(Self.openAIStream.utf8)
            for start in stride(from: 0, to: bytes.count, by: chunkSize) {
                for event in splitter.feed(bytes[start..<min(bytes.count, start + chunkSize)]) where meter.observe(event) {
                    forwarded += String(decoding: event, as: UTF8.self)
                }
            }
            #expect(meter.usage == ReportedUsage(promptTokens: 14, completionTokens: 30))
            #expect(meter.sawDone)
            #expect(forwarded.contains("\"usage\"") == asked)
            #expect(forwarded.hasSuffix("data: [DONE]\n\n"))
        }
    }

    @Test func anthropicUsageCombinesStartAndCumulativeDelta() {
        let stream = """
        event: message_start
        data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-3-opus-latest","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":377,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}

        event: ping
        data: {"type": "ping"}

        event: content_block_delta
        data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

        event: message_delta
        data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}

        event: message_stop
        data: {"type":"message_stop"}


        """
        var splitter = SSESplitter()
        var meter = AnthropicStreamMeter()
        for event in splitter.feed(Array(stream.utf8)) { meter.observe(event) }
        // 10 tokens written to the cache (at the 5-minute rate, with no breakdown given).
        #expect(meter.usage == ReportedUsage(promptTokens: 487, completionTokens: 6, cachedTokens: 100,
                                             cacheWrites: CacheWrites(fiveMinute: 10)))
        #expect(meter.sawStop)
    }

    @Test func ndjsonSplitsAcrossChunks() {
        var splitter = NDJSONSplitter()
        let text = ollamaChunks.joined(separator: "\n") + "\n"
        var objects: [JSONValue] = []
        let bytes = Array(text.utf8)
        for start in stride(from: 0, to: bytes.count, by: 13) {
            objects += splitter.feed(bytes[start..<min(bytes.count, start + 13)])
        }
        #expect(objects.count == 3)
        #expect(objects.last?["done"]?.bool == true)
    }
}

struct PriceCatalogTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func embeddedCatalogMatchesTheDataFile() throws {
        let file = try String(contentsOf: Self.root.appendingPathComponent("data/provider-prices.json"), encoding: .utf8)
        #expect(file.trimmingCharacters(in: .newlines) == PriceCatalog.embeddedJSON, "run scripts/embed-data.py")
    }

    @Test func datedSnapshotsUseTheirFamilysPrice() throws {
        let catalog = PriceCatalog.shipped
        #expect(catalog.entry(for: "gpt-4o-2024-08-06")?.model == "gpt-4o")
        #expect(catalog.entry(for: "gpt-4o-mini")?.price.inputPer1M == Money(nanos: 150_000_000))
        #expect(catalog.entry(for: "claude-sonnet-4-5-20250929")?.price.outputPer1M == Money(nanos: 15_000_000_000))
        #expect(catalog.entry(for: "claude-opus-4-1-20250805")?.model == "claude-opus-4-1")
        #expect(catalog.entry(for: "llama3") == nil)
    }

    /// The byte-wise lookup picks what the longest-prefix rule over characters picks.
    @Test func theLookupIsTheLongestFamilyPrefix() {
        let catalog = PriceCatalog.shipped
        let names = catalog.entries.flatMap { [$0.model, $0.model + "-2025-01-01", $0.model + "x", $0.model + "-",
                                               String($0.model.dropLast())] } + ["", "llama3", "gpt", "claude-", "-"]
        for name in names {
            let expected = catalog.entries.filter { name == $0.model || name.hasPrefix($0.model + "-") }
                .max { $0.model.count < $1.model.count }
            #expect(catalog.entry(for: name) == expected, "\(name)")
        }
    }
}
