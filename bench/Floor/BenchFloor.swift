import AsyncHTTPClient
import EventLoopExecutor
import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import UpstreamHTTP

/// The libraries' own floor on this machine, for `bench/floors.py`: what lmsvr's request path
/// costs before any of its own work.
///
/// - `GET /`: Hummingbird alone answers two bytes.
/// - `POST /api/chat`: the body read whole, forwarded with AsyncHTTPClient (its default pool, no
///   tracer, as lmsvr configures it) and the answer returned whole: a proxy with no auth, no
///   billing, no parsing.
///
/// `bench-floor PORT UPSTREAM_URL [--nio-executor | --loop-executor] [--lean]`: with `--nio-executor`, Swift
/// Concurrency runs on NIO's event loops through NIO's own takeover, one loop per CPU the process may use;
/// with `--loop-executor`, on the same loops as the generic executor (`GlobalExecutorOnEventLoops`, as
/// `lmsvr serve` does since the seventh pass in docs/benchmarks.md); with
/// `--lean`, the forward goes through `HTTP1Pool` (lmsvr's client for plain-HTTP Ollama servers)
/// instead of AsyncHTTPClient.
@main
struct BenchFloor {
    static func main() async throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 3, let port = Int(arguments[1]) else {
            FileHandle.standardError.write(Data("usage: bench-floor PORT UPSTREAM_URL [--nio-executor | --loop-executor] [--lean]\n".utf8))
            exit(2)
        }
        let upstream = arguments[2]
        if arguments.contains("--nio-executor") || arguments.contains("--loop-executor") {
            if let allowed = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)
                .split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }),
                !allowed.contains(","), !allowed.contains("-") {
                setenv("NIO_SINGLETON_GROUP_LOOP_COUNT", "1", 1) // pinned to one CPU: one loop
            }
            if arguments.contains("--loop-executor") {
                GlobalExecutorOnEventLoops.install()
            } else {
                NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
            }
        }
        var configuration = HTTPClient.Configuration()
        configuration.tracing.tracer = nil
        configuration.httpVersion = .http1Only
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let router = Router()
        router.get("/") { _, _ in "ok" }
        if arguments.contains("--lean"), let authority = upstream.split(separator: "/").dropFirst().first,
           let colon = authority.lastIndex(of: ":"), let upstreamPort = Int(authority[authority.index(after: colon)...]) {
            let pool = HTTP1Pool(host: String(authority[..<colon]), port: upstreamPort, group: MultiThreadedEventLoopGroup.singleton,
                                 maxConnections: 1000, connectTimeout: .seconds(5))
            router.post("/api/chat") { request, _ -> Response in
                let body = try await request.body.collect(upTo: 1 << 20)
                let response = try await pool.execute(method: .POST, path: "/api/chat", headers: ["content-type": "application/json"],
                                                      body: body, headTimeout: .seconds(30))
                var answer = ByteBuffer()
                while var chunk = try await response.body.next(idleTimeout: .seconds(30)) { answer.writeBuffer(&chunk) }
                return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer))
            }
            let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
            try await app.runService()
            return
        }
        router.post("/api/chat") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            var forward = HTTPClientRequest(url: upstream + "/api/chat")
            forward.method = .POST
            forward.headers.add(name: "content-type", value: "application/json")
            forward.body = .bytes(body)
            let response = try await client.execute(forward, timeout: .seconds(30))
            let answer = try await response.body.collect(upTo: 1 << 20)
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: answer))
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: port)))
        try await app.runService()
        try await client.shutdown()
    }
}
