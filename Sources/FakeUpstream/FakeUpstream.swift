import Foundation
import Hummingbird
import JSONKit
import NIOConcurrencyHelpers
import NIOCore

/// A fake Ollama for tests and benchmarks (Ollama cannot run here). It follows the wire formats
/// byte for byte: NDJSON streaming with Go's key order, final-chunk metrics, `{"error"}` bodies,
/// mid-stream error lines. Behaviour is chosen by model name:
///
/// - `llama3`, `mistral`: a fixed answer, one word per chunk, `prompt_eval_count` 26;
/// - `all-minilm`: embeddings;
/// - `drip`: the same answer with `dripMillis` between chunks (for streaming and cancel tests);
/// - `slowstream`: `chunks` words with `dripMillis` between them (long-lived streams for the
///   memory benchmark);
/// - `slow`: waits `slowSeconds` before answering (`/_fake/stats` reports the most waiting at once);
/// - `error500`: HTTP 500 with Ollama's error body;
/// - `fail-midstream`: two chunks, then an error line;
/// - `truncated`: two chunks, then the body ends without the final chunk (not streamed: half
///   the answer, then the connection drops);
/// - `runaway`: `runawayChunks` chunks whatever `num_predict` says (an upstream that ignores
///   its limit);
/// - `big`: up to `bigChunks` chunks of 1 KiB each, as fast as possible;
/// - anything else: 404 `model 'x' not found`.
///
/// Requests are read as Ollama reads them (`GoStyleRequest`: keys match ignoring case, the last
/// one wins) and model references resolve as Ollama resolves them (`OllamaReference`).
public struct FakeUpstream: Sendable {
    public struct Options: Sendable {
        public var dripMillis: Int = 200
        public var slowSeconds: Double = 3
        /// Milliseconds between chunks for the normal models (0: as fast as possible).
        public var paceMillis: Int = 0
        /// Content chunks in a normal answer (words of the fixed sentence, repeated).
        public var chunks: Int = 8
        /// Delay before the response head, for latency benchmarks.
        public var latencyMillis: Int = 0
        /// Stamp every chunk with one fixed `created_at` instead of the clock: deterministic
        /// bytes, and no date formatting on the benchmark's hot path.
        public var fixedClock = false
        /// Streamed chunks of the normal models carry, as their text, `@` and the moment they
        /// were written (CLOCK_MONOTONIC nanoseconds, one clock for every process on the
        /// machine): the benchmark driver subtracts it from when the chunk reached it, so a
        /// chunk's transit is measured apart from the fake's own pacing.
        public var stampChunks = false
        /// Chunks the `runaway` model sends, ignoring `num_predict`.
        public var runawayChunks = 500
        /// The most chunks the `big` model sends.
        public var bigChunks = 16_000
        /// Only these models (short names, magic ones included), listed in `/api/tags`: one of
        /// several servers with different model sets. nil: the usual three, and every magic model.
        public var models: [String]?
        /// What `/api/ps` lists as loaded.
        public var loaded: [String] = []

        public init() {}
    }

    public let options: Options
    public let recorder = Recorder()

    public init(options: Options = Options()) {
        self.options = options
    }

    /// What the fake saw, for tests to check.
    public final class Recorder: Sendable {
        private let state = NIOLockedValueBox(State())
        struct State {
            var calls: [String: Int] = [:]
            var cancelledStreams = 0
            var lastChunkSentAt: [String: ContinuousClock.Instant] = [:]
            var lastAuthorization: String?
            var lastBody: [String: String] = [:]
            var inFlight = 0
            var maxInFlight = 0
        }

        public func calls(_ path: String) -> Int { state.withLockedValue { $0.calls[path] ?? 0 } }
        public var totalCalls: Int { state.withLockedValue { $0.calls.values.reduce(0, +) } }
        public var cancelledStreams: Int { state.withLockedValue { $0.cancelledStreams } }
        public var lastAuthorization: String? { state.withLockedValue { $0.lastAuthorization } }
        /// The body of the last request to `path`, as received.
        public func lastBody(_ path: String) -> String? { state.withLockedValue { $0.lastBody[path] } }
        /// When the last chunk of the most recent stream for `model` was handed to the socket.
        public func lastChunkSentAt(model: String) -> ContinuousClock.Instant? {
            state.withLockedValue { $0.lastChunkSentAt[model] }
        }

        func record(_ path: String, authorization: String?) {
            state.withLockedValue {
                $0.calls[path, default: 0] += 1
                $0.lastAuthorization = authorization
            }
        }
        func recordBody(_ path: String, _ body: [UInt8]) {
            state.withLockedValue { $0.lastBody[path] = String(decoding: body, as: UTF8.self) }
        }
        /// The most `slow` requests that were waiting at once since the last reset.
        public var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }
        func resetMaxInFlight() { state.withLockedValue { $0.maxInFlight = $0.inFlight } }
        func enter() {
            state.withLockedValue {
                $0.inFlight += 1
                $0.maxInFlight = max($0.maxInFlight, $0.inFlight)
            }
        }
        func leave() { state.withLockedValue { $0.inFlight -= 1 } }
        func recordCancel() { state.withLockedValue { $0.cancelledStreams += 1 } }
        func recordLastChunk(model: String) { state.withLockedValue { $0.lastChunkSentAt[model] = .now } }
    }

    static let words = ["The ", "sky ", "is ", "blue ", "because ", "of ", "Rayleigh ", "scattering."]
    static let promptEvalCount = 26
    static let served = ["llama3:latest", "mistral:latest", "all-minilm:latest"]
    static let magic = ["drip", "slowstream", "slow", "error500", "busy503", "fail-midstream", "truncated", "runaway", "big"]

    /// The router with every Ollama route the gateway uses.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.get("/") { _, _ in Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"],
                                           body: .init(byteBuffer: ByteBuffer(string: "Ollama is running"))) }
        router.get("/api/version") { request, _ in
            recorder.record("/api/version", authorization: request.headers[.authorization])
            return Self.json(.ok, #"{"version":"0.5.1"}"#)
        }
        router.get("/api/tags") { request, _ in
            recorder.record("/api/tags", authorization: request.headers[.authorization])
            return Self.json(.ok, options.models.map { Self.tagsBody(for: $0.map { $0 + ":latest" }) } ?? Self.tagsBody)
        }
        router.get("/api/ps") { request, _ in
            recorder.record("/api/ps", authorization: request.headers[.authorization])
            return Self.json(.ok, Self.tagsBody(for: options.loaded.map { $0 + ":latest" }))
        }
        router.post("/api/show") { request, _ in
            recorder.record("/api/show", authorization: request.headers[.authorization])
            let body = try await read(request, "/api/show")
            let name = body?.field("model")?.string ?? body?.field("name")?.string ?? ""
            guard let model = resolve(name) else { return Self.error(.notFound, "model '\(name)' not found") }
            return Self.json(.ok, Self.showBody(model + ":latest"))
        }
        router.post("/api/chat") { request, _ in try await generate(request, chat: true) }
        router.post("/api/generate") { request, _ in try await generate(request, chat: false) }
        router.post("/api/embed") { request, _ in
            recorder.record("/api/embed", authorization: request.headers[.authorization])
            guard let body = try await read(request, "/api/embed") else { return Self.error(.badRequest, "invalid JSON") }
            let name = body.field("model")?.string ?? ""
            guard let model = resolve(name) else { return Self.error(.notFound, "model '\(name)' not found") }
            let input = body.field("input")
            let count = input?.kind == .array ? input!.count : 1
            let vectors = Array(repeating: "[0.010071029,-0.0017594862,0.05007221]", count: count).joined(separator: ",")
            return Self.json(.ok, "{\"model\":\"\(model)\",\"embeddings\":[\(vectors)],\"total_duration\":14143917,\"load_duration\":1019500,\"prompt_eval_count\":\(8 * count)}")
        }
        router.post("/api/embeddings") { request, _ in
            recorder.record("/api/embeddings", authorization: request.headers[.authorization])
            guard let body = try await read(request, "/api/embeddings") else { return Self.error(.badRequest, "invalid JSON") }
            let name = body.field("model")?.string ?? ""
            guard resolve(name) != nil else { return Self.error(.notFound, "model '\(name)' not found") }
            return Self.json(.ok, #"{"embedding":[0.5670403838157654,0.009260174818336964,0.23178744316101074]}"#)
        }
        registerProviders(on: router)
        // For tests that run the fake as a separate process: how many calls it has served.
        router.get("/_fake/stats") { request, _ in
            if request.uri.queryParameters["reset"] != nil { recorder.resetMaxInFlight() }
            let metered = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"].map(recorder.calls).reduce(0, +)
            return Self.json(.ok, "{\"calls\":\(recorder.totalCalls),\"metered\":\(metered),\"max_in_flight\":\(recorder.maxInFlight)}")
        }
        return router
    }

    // MARK: Chat and generate

    func generate(_ request: Request, chat: Bool) async throws -> Response {
        let path = chat ? "/api/chat" : "/api/generate"
        recorder.record(path, authorization: request.headers[.authorization])
        guard let body = try await read(request, path) else { return Self.error(.badRequest, "invalid character in request body") }
        guard let requested = body.field("model")?.string, !requested.isEmpty else {
            return Self.error(.badRequest, "model is required")
        }
        guard let name = resolve(requested) else { return Self.error(.notFound, "model '\(requested)' not found") }
        if options.latencyMillis > 0 { try await Task.sleep(for: .milliseconds(options.latencyMillis)) }
        switch name {
        case "slow":
            // Counted while it waits: the most at once is what a concurrency limit must bound.
            recorder.enter()
            defer { recorder.leave() }
            try await Task.sleep(for: .seconds(options.slowSeconds))
        case "error500": return Self.error(.internalServerError, "an error was encountered while running the model")
        // What Ollama answers when more requests wait than OLLAMA_MAX_QUEUE allows.
        case "busy503": return Self.error(.serviceUnavailable, "server busy, please try again.  maximum pending requests exceeded")
        default: break
        }
        // Ollama's options are a map: exact keys. A number becomes an integer by truncation;
        // zero or less means no limit.
        let limit = GoStyleRequest.mapValue(body.field("options"), "num_predict")?.double.map { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
        let available = switch name {
        case "drip": Self.words.count
        case "runaway": options.runawayChunks
        case "big": options.bigChunks
        default: options.chunks
        }
        let count = name == "runaway" ? available : min(limit ?? Int.max, available)
        let pieces = (0..<count).map { name == "big" ? Self.kilobyte($0) : Self.words[$0 % Self.words.count] }
        let doneReason = limit.map { $0 <= available } == true && name != "drip" && name != "runaway" ? "length" : "stop"
        let echo = requested // Ollama echoes the model name as the client wrote it
        let streaming = body.field("stream")?.bool ?? true
        let stamp: @Sendable () -> String = { [fixedClock = options.fixedClock] in fixedClock ? Self.fixedCreatedAt : Self.createdAt() }

        if !streaming {
            let text = pieces.joined()
            let whole = Self.final(chat: chat, model: echo, createdAt: stamp(), content: text, doneReason: doneReason, evalCount: count)
            if name == "truncated" {
                // Half the answer, then the connection drops, as a crashed server would.
                return Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"], body: ResponseBody { writer in
                    try await writer.write(ByteBuffer(string: String(whole.prefix(whole.count / 2))))
                    throw CancellationError()
                })
            }
            return Self.json(.ok, whole)
        }
        // The runaway model paces itself a little, so the gateway's cut-off arrives mid-stream.
        let pace = name == "drip" || name == "slowstream" ? options.dripMillis : name == "runaway" ? max(2, options.paceMillis) : options.paceMillis
        let recorder = self.recorder, stampChunks = options.stampChunks
        return Response(
            status: .ok, headers: [.contentType: "application/x-ndjson"],
            body: ResponseBody { writer in
                do {
                    for (i, piece) in pieces.enumerated() {
                        if i > 0 && pace > 0 { try await Task.sleep(for: .milliseconds(pace)) }
                        if name == "fail-midstream" && i == 2 {
                            try await writer.write(ByteBuffer(string: #"{"error":"an error was encountered while running the model"}"# + "\n"))
                            recorder.recordLastChunk(model: name)
                            try await writer.finish(nil)
                            return
                        }
                        if name == "truncated" && i == 2 {
                            // End the body without the final chunk, as a crashed runner would.
                            recorder.recordLastChunk(model: name)
                            try await writer.finish(nil)
                            return
                        }
                        let text = stampChunks && name != "big" ? "@\(Self.monotonicNanos()) " : piece
                        try await writer.write(ByteBuffer(string: Self.chunk(chat: chat, model: echo, createdAt: stamp(), content: text) + "\n"))
                    }
                    if pace > 0 { try await Task.sleep(for: .milliseconds(pace)) }
                    try await writer.write(ByteBuffer(string: Self.final(chat: chat, model: echo, createdAt: stamp(), content: "", doneReason: doneReason, evalCount: count) + "\n"))
                    recorder.recordLastChunk(model: name)
                    try await writer.finish(nil)
                } catch {
                    recorder.recordCancel()
                    throw error
                }
            })
    }

    // MARK: Wire format

    static let fixedCreatedAt = "2025-05-04T17:37:44.706015396Z"

    /// CLOCK_MONOTONIC in nanoseconds: comparable between processes on one machine.
    public static func monotonicNanos() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    static func createdAt() -> String {
        let now = Date()
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: now)
    }

    static func chunk(chat: Bool, model: String, createdAt: String, content: String) -> String {
        if chat {
            return "{\"model\":\(quote(model)),\"created_at\":\"\(createdAt)\",\"message\":{\"role\":\"assistant\",\"content\":\(quote(content))},\"done\":false}"
        }
        return "{\"model\":\(quote(model)),\"created_at\":\"\(createdAt)\",\"response\":\(quote(content)),\"done\":false}"
    }

    static func final(chat: Bool, model: String, createdAt: String, content: String, doneReason: String, evalCount: Int) -> String {
        let metrics = "\"total_duration\":182242375,\"load_duration\":41295167,\"prompt_eval_count\":\(promptEvalCount),\"prompt_eval_duration\":24573166,\"eval_count\":\(evalCount),\"eval_duration\":115959084"
        if chat {
            return "{\"model\":\(quote(model)),\"created_at\":\"\(createdAt)\",\"message\":{\"role\":\"assistant\",\"content\":\(quote(content))},\"done_reason\":\"\(doneReason)\",\"done\":true,\(metrics)}"
        }
        return "{\"model\":\(quote(model)),\"created_at\":\"\(createdAt)\",\"response\":\(quote(content)),\"done\":true,\"done_reason\":\"\(doneReason)\",\"context\":[1,2,3],\(metrics)}"
    }

    /// The exact `/api/tags` body this fake serves.
    public static let tagsBody = tagsBody(for: served)

    static func tagsBody(for names: [String]) -> String {
        "{\"models\":[" + names.map { name in
        let family = name.hasPrefix("all-minilm") ? "bert" : (name.hasPrefix("mistral") ? "llama" : "llama")
        let size = name.hasPrefix("all-minilm") ? "23M" : (name.hasPrefix("mistral") ? "7.2B" : "8.0B")
        return "{\"name\":\"\(name)\",\"model\":\"\(name)\",\"modified_at\":\"2025-05-04T17:37:44.706015396-07:00\",\"size\":2019393189,\"digest\":\"a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72\",\"details\":{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"\(family)\",\"families\":[\"\(family)\"],\"parameter_size\":\"\(size)\",\"quantization_level\":\"Q4_K_M\"}}"
    }.joined(separator: ",") + "]}"
    }

    static func showBody(_ model: String) -> String {
        let embedding = model.hasPrefix("all-minilm")
        let arch = embedding ? "bert" : "llama"
        let context = embedding ? 512 : 8192
        let capabilities = embedding ? "[\"embedding\"]" : "[\"completion\",\"tools\"]"
        return "{\"modelfile\":\"FROM \(model)\",\"parameters\":\"num_ctx 4096\",\"template\":\"{{ .Prompt }}\",\"details\":{\"parent_model\":\"\",\"format\":\"gguf\",\"family\":\"\(arch)\",\"families\":[\"\(arch)\"],\"parameter_size\":\"\(embedding ? "23M" : "8.0B")\",\"quantization_level\":\"Q4_0\"},\"model_info\":{\"general.architecture\":\"\(arch)\",\"general.parameter_count\":8030261248,\"\(arch).context_length\":\(context),\"\(arch).embedding_length\":4096,\"tokenizer.ggml.tokens\":[]},\"capabilities\":\(capabilities),\"modified_at\":\"2025-05-04T17:37:44.706015396-07:00\"}"
    }

    /// The short name (`llama3`, `drip`) of a model this fake serves, or nil.
    static func resolve(_ raw: String?) -> String? {
        guard let raw, let full = OllamaReference.fullName(raw) else { return nil }
        return (served.map { String($0.dropLast(7)) } + magic).first { OllamaReference.fullName($0) == full }
    }

    /// The short name of a model this instance serves (its `models`, if set), or nil.
    func resolve(_ raw: String?) -> String? {
        guard let name = Self.resolve(raw) else { return nil }
        return options.models.map { $0.contains(name) } ?? true ? name : nil
    }

    /// One kilobyte of text for chunk `i` of the `big` model.
    static func kilobyte(_ i: Int) -> String {
        String(repeating: "x", count: 1023 - String(i).count) + String(i) + " "
    }

    /// Reads and records a request body; nil when it is not a JSON object.
    func read(_ request: Request, _ path: String) async throws -> GoStyleRequest? {
        let bytes = Array(buffer: try await request.body.collect(upTo: 64 << 20))
        recorder.recordBody(path, bytes)
        return GoStyleRequest(bytes)
    }

    static func json(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(status, "{\"error\":\(quote(message))}")
    }

    static func quote(_ s: String) -> String {
        // Plain printable ASCII needs no escaping: skip the encoder (the benchmark's hot path).
        if s.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 != UInt8(ascii: "/") }) {
            return "\"" + s + "\""
        }
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
