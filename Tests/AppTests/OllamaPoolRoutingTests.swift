@testable import App
import Core
import Logging
import Testing

/// The pool's choice of server, without sockets: model-aware, weighted by calls in flight,
/// preferring a loaded model while its server has a free slot, and never a server that failed.
@Suite("Ollama pool routing")
struct OllamaPoolRoutingTests {
    /// A pool of `servers` that never calls them (the tests say what checks would have found).
    static func withPool(_ servers: [OllamaServer], _ body: (OllamaPool) async throws -> Void) async throws {
        var configuration = try Configuration(environment: ["DATABASE_URL": "sqlite:///tmp/unused.db"])
        configuration.ollamaServers = servers
        let upstream = UpstreamClient(configuration: configuration)
        do {
            try await body(OllamaPool(servers: servers, upstream: upstream, metrics: GatewayMetrics(), logger: Logger(label: "test")))
        } catch {
            await upstream.shutdown()
            throw error
        }
        await upstream.shutdown()
    }

    static let three = [OllamaServer(url: "http://a:1"), OllamaServer(url: "http://b:1"), OllamaServer(url: "http://c:1")]

    @Test func onlyServersThatHaveTheModelAndAreHealthy() async throws {
        try await Self.withPool(Self.three) { pool in
            pool.assume(0, models: ["llama3"])
            pool.assume(1, healthy: false, models: ["llama3", "mistral"])
            pool.assume(2, models: ["mistral"])
            var leases: [OllamaPool.Lease] = []
            for _ in 0..<6 { leases.append(await pool.acquire(model: "llama3")!) }
            #expect(Set(leases.map(\.index)) == [0])
            for _ in 0..<6 { leases.append(await pool.acquire(model: "mistral")!) }
            #expect(leases.suffix(6).allSatisfy { $0.index == 2 })
            // The retry's alternative must list the model too: none for llama3 but the failed one.
            #expect(pool.alternative(to: 0, model: "llama3") == nil)
            #expect(pool.alternative(to: 2, model: "mistral") == nil, "b has it but is out of the rotation")
            #expect(pool.servers.map(\.inFlight) == [6, 0, 6])
            leases.forEach { $0.end() }
            leases.first!.end() // idempotent
            #expect(pool.servers.map(\.inFlight) == [0, 0, 0])
        }
    }

    @Test func callsInFlightFollowTheWeights() async throws {
        try await Self.withPool([OllamaServer(url: "http://a:1", weight: 3), OllamaServer(url: "http://b:1")]) { pool in
            pool.assume(0, models: ["llama3"])
            pool.assume(1, models: ["llama3"])
            var leases: [OllamaPool.Lease] = []
            for _ in 0..<8 { leases.append(await pool.acquire(model: "llama3")!) }
            #expect(pool.servers.map(\.inFlight) == [6, 2])
            // One ends on the heavy server: the next call takes its place there.
            leases.first { $0.index == 0 }!.end()
            leases.append(await pool.acquire(model: "llama3")!)
            #expect(pool.servers.map(\.inFlight) == [6, 2])
            leases.forEach { $0.end() }
        }
    }

    @Test func aLoadedModelIsPreferredWhileItsServerHasAFreeSlot() async throws {
        try await Self.withPool(Array(Self.three.prefix(2))) { pool in
            pool.assume(0, models: ["llama3"])
            pool.assume(1, models: ["llama3"], loaded: ["llama3"])
            var leases: [OllamaPool.Lease] = []
            for _ in 0..<OllamaPool.parallelSlots { leases.append(await pool.acquire(model: "llama3")!) }
            #expect(leases.allSatisfy { $0.index == 1 }, "the loaded server takes its slots first")
            for _ in 0..<OllamaPool.parallelSlots { leases.append(await pool.acquire(model: "llama3")!) }
            #expect(pool.servers.map(\.inFlight) == [4, 4], "then the other shares the load and loads the model")
            leases.append(await pool.acquire(model: "llama3")!)
            #expect(pool.servers.map(\.inFlight).reduce(0, +) == 9 && pool.servers.allSatisfy { $0.inFlight <= 5 })
            leases.forEach { $0.end() }
        }
    }

    @Test func aCallWithoutAModelGoesToAnyHealthyServer() async throws {
        try await Self.withPool(Array(Self.three.prefix(2))) { pool in
            pool.assume(0, healthy: false, models: [])
            pool.assume(1, models: [])
            #expect(await pool.acquire(model: "")?.index == 1)
        }
    }
}
