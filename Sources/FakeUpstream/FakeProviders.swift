import Foundation
import HTTPTypes
import JSONKit
import Hummingbird
import NIOCore

/// Fake OpenAI (`POST /v1/chat/completions`, `/v1/embeddings`) and Anthropic (`POST /v1/messages`)
/// upstreams, in the recorded formats of wire-formats §4 and §5. Any `gpt-*`/`o*`/`text-embedding-*`
/// model answers as OpenAI; any `claude-*` as Anthropic; names containing `nope` get the
/// provider's 404, `overloaded` its 529/503. The answer is the same sentence as the fake Ollama's,
/// cut at the request's output limit (`max_completion_tokens`/`max_tokens`) as the real services
/// do, except for names containing `runaway`, which ignore it and send `runawayChunks` words.
extension FakeUpstream {
    static let openAIPromptTokens = 14
    static let openAICachedTokens = 4
    static let anthropicInputTokens = 11

    func registerProviders(on router: Router<BasicRequestContext>) {
        router.post("/v1/chat/completions") { request, _ in try await openAIChat(request) }
        router.post("/v1/embeddings") { request, _ in
            recorder.record("/v1/embeddings", authorization: request.headers[.authorization])
            let object = try await recordedObject(request, "/v1/embeddings")
            let input = object?["input"]
            let count = input?.kind == .array ? input!.count : 1
            let data = (0..<count).map { "{\"object\":\"embedding\",\"index\":\($0),\"embedding\":[0.0023064255,-0.009327292]}" }
            return Self.json(.ok, "{\"object\":\"list\",\"data\":[\(data.joined(separator: ","))],\"model\":\(Self.quote(object?["model"]?.string ?? "")),\"usage\":{\"prompt_tokens\":\(5 * count),\"total_tokens\":\(5 * count)}}")
        }
        router.post("/v1/messages") { request, _ in try await anthropicMessages(request) }
    }

    func openAIChat(_ request: Request) async throws -> Response {
        recorder.record("/v1/chat/completions", authorization: request.headers[.authorization])
        guard let object = try await recordedObject(request, "/v1/chat/completions"), let model = object["model"]?.string else {
            return Self.openAIError(.badRequest, "We could not parse the JSON body of your request.", type: "invalid_request_error", code: nil)
        }
        if model.contains("nope") {
            return Self.openAIError(.notFound, "The model `\(model)` does not exist or you do not have access to it.",
                                    type: "invalid_request_error", code: "model_not_found")
        }
        if model.contains("overloaded") {
            return Self.openAIError(.serviceUnavailable, "The server is overloaded.", type: "server_error", code: "server_is_overloaded")
        }
        let id = "chatcmpl-ABfw031mOJeYCSHe4yI2ZjOA6kMJL", created = 1727346168
        let limit = (object["max_completion_tokens"] ?? object["max_tokens"])?.int64.map { Int($0) }
        let completion = model.contains("runaway") ? options.runawayChunks : min(limit ?? .max, options.chunks)
        let finish = !model.contains("runaway") && limit.map { $0 <= options.chunks } == true ? "length" : "stop"
        let pieces = (0..<completion).map { Self.words[$0 % Self.words.count] }
        let usage = "{\"prompt_tokens\":\(Self.openAIPromptTokens),\"completion_tokens\":\(completion),\"total_tokens\":\(Self.openAIPromptTokens + completion),\"prompt_tokens_details\":{\"cached_tokens\":\(Self.openAICachedTokens),\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}"
        guard object["stream"]?.bool == true else {
            return Self.json(.ok, "{\"id\":\"\(id)\",\"object\":\"chat.completion\",\"created\":\(created),\"model\":\(Self.quote(model)),\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\(Self.quote(pieces.joined())),\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"\(finish)\"}],\"usage\":\(usage),\"system_fingerprint\":\"fp_b40fb1c6fb\"}")
        }
        let includeUsage = object["stream_options"]?["include_usage"]?.bool ?? false
        let head = "data: {\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"created\":\(created),\"model\":\(Self.quote(model)),\"system_fingerprint\":\"fp_5050236cbd\",\"choices\":"
        var events = [head + "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}]" + (includeUsage ? ",\"usage\":null" : "") + "}\n\n"]
        for word in pieces {
            events.append(head + "[{\"index\":0,\"delta\":{\"content\":\(Self.quote(word))},\"logprobs\":null,\"finish_reason\":null}]" + (includeUsage ? ",\"usage\":null" : "") + "}\n\n")
        }
        events.append(head + "[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"\(finish)\"}]" + (includeUsage ? ",\"usage\":null" : "") + "}\n\n")
        if includeUsage { events.append(head + "[],\"usage\":\(usage)}\n\n") }
        events.append("data: [DONE]\n\n")
        return streamed(events, contentType: "text/event-stream; charset=utf-8", model: model)
    }

    func anthropicMessages(_ request: Request) async throws -> Response {
        recorder.record("/v1/messages", authorization: request.headers[HTTPField.Name("x-api-key")!])
        guard let object = try await recordedObject(request, "/v1/messages"), let model = object["model"]?.string else {
            return Self.anthropicError(.badRequest, "invalid_request_error", "invalid JSON")
        }
        if model.contains("nope") { return Self.anthropicError(.notFound, "not_found_error", "model: \(model)") }
        if model.contains("overloaded") {
            return Self.anthropicError(HTTPResponse.Status(code: 529, reasonPhrase: "Overloaded"), "overloaded_error", "Overloaded")
        }
        let limit = object["max_tokens"]?.int64.map { Int($0) } ?? .max
        let output = model.contains("runaway") ? options.runawayChunks : min(limit, Self.words.count)
        let stop = !model.contains("runaway") && limit < Self.words.count ? "max_tokens" : "end_turn"
        let words = (0..<output).map { Self.words[$0 % Self.words.count] }
        let id = "msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK"
        guard object["stream"]?.bool == true else {
            return Self.json(.ok, "{\"model\":\(Self.quote(model)),\"id\":\"\(id)\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\(Self.quote(words.joined()))}],\"stop_reason\":\"\(stop)\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":\(Self.anthropicInputTokens),\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":\(output),\"service_tier\":\"standard\"}}")
        }
        func event(_ name: String, _ data: String) -> String { "event: \(name)\ndata: \(data)\n\n" }
        var events = [
            event("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"\(id)\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\(Self.quote(model)),\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":\(Self.anthropicInputTokens),\"output_tokens\":1}}}"),
            event("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"),
            event("ping", "{\"type\": \"ping\"}"),
        ]
        for word in words {
            events.append(event("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\(Self.quote(word))}}"))
        }
        events.append(event("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}"))
        events.append(event("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"\(stop)\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":\(output)}}"))
        events.append(event("message_stop", "{\"type\":\"message_stop\"}"))
        return streamed(events, contentType: "text/event-stream; charset=utf-8", model: model)
    }

    func streamed(_ events: [String], contentType: String, model: String) -> Response {
        let pace = options.paceMillis, recorder = self.recorder
        return Response(status: .ok, headers: [.contentType: contentType, .cacheControl: "no-cache"], body: ResponseBody { writer in
            do {
                for (i, event) in events.enumerated() {
                    if i > 0 && pace > 0 { try await Task.sleep(for: .milliseconds(pace)) }
                    try await writer.write(ByteBuffer(string: event))
                }
                recorder.recordLastChunk(model: model)
                try await writer.finish(nil)
            } catch {
                recorder.recordCancel()
                throw error
            }
        })
    }

    /// Reads and records a JSON object body (the real services read keys exactly).
    func recordedObject(_ request: Request, _ path: String) async throws -> JSONValue? {
        let bytes = Array(buffer: try await request.body.collect(upTo: 64 << 20))
        recorder.recordBody(path, bytes)
        guard let document = try? JSONDocument.parse(bytes), document.root.kind == .object else { return nil }
        return document.root
    }

    static func openAIError(_ status: HTTPResponse.Status, _ message: String, type: String, code: String?) -> Response {
        json(status, "{\"error\":{\"message\":\(quote(message)),\"type\":\"\(type)\",\"param\":null,\"code\":\(code.map { "\"\($0)\"" } ?? "null")}}")
    }

    static func anthropicError(_ status: HTTPResponse.Status, _ type: String, _ message: String) -> Response {
        json(status, "{\"type\":\"error\",\"error\":{\"type\":\"\(type)\",\"message\":\(quote(message))},\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}")
    }
}
