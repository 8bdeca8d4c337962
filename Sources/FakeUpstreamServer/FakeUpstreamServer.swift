import FakeUpstream
import Foundation
import Hummingbird
import NIOCore
import NIOPosix

/// `lmsvr-fake-upstream [--port N] [--pace-ms N] [--chunks N] [--latency-ms N] [--drip-ms N] [--slow-ms N] [--models a,b] [--loaded a,b] [--fixed-clock] [--stamp-chunks]`:
/// the test suite's fake Ollama as a process, for the end-to-end tests and benchmarks. Prints
/// `listening on PORT` once ready.
@main
struct FakeUpstreamServer {
    static func main() async throws {
        // Tasks on NIO's event loops, as `lmsvr serve` does: the fake must outrun what it measures.
        NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        let args = CommandLine.arguments
        func value(_ flag: String) -> Int? {
            args.firstIndex(of: flag).flatMap { $0 + 1 < args.count ? Int(args[$0 + 1]) : nil }
        }
        var options = FakeUpstream.Options()
        if let v = value("--pace-ms") { options.paceMillis = v }
        if let v = value("--chunks") { options.chunks = v }
        if let v = value("--latency-ms") { options.latencyMillis = v }
        if let v = value("--drip-ms") { options.dripMillis = v }
        if let v = value("--slow-ms") { options.slowSeconds = Double(v) / 1000 }
        func list(_ flag: String) -> [String]? {
            args.firstIndex(of: flag).flatMap { $0 + 1 < args.count ? args[$0 + 1].split(separator: ",").map(String.init) : nil }
        }
        options.models = list("--models")
        options.loaded = list("--loaded") ?? []
        options.fixedClock = args.contains("--fixed-clock")
        options.stampChunks = args.contains("--stamp-chunks")
        let fake = FakeUpstream(options: options)
        let app = Application(
            router: fake.router(),
            // Ollama is a Go server: its listen backlog is net.core.somaxconn, not Hummingbird's 256.
            configuration: .init(address: .hostname("127.0.0.1", port: value("--port") ?? 0), serverName: "fake-ollama",
                                 backlog: 4096),
            onServerRunning: { channel in
                FileHandle.standardOutput.write(Data("listening on \(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: .init(label: "fake-upstream"))
        try await app.runService()
    }
}
