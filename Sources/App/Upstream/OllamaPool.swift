import Core
import EventLoopClock
import Foundation
import JSONKit
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The Ollama servers behind the gateway (`OLLAMA_BASE_URL`), and which one serves each call.
///
/// Routing is model-aware: a call goes only to healthy servers that list its model in `/api/tags`,
/// preferring those that have it loaded (`/api/ps`, so requests do not force model swaps) while they
/// have a free slot, and among them to the one with the fewest outstanding requests per unit of
/// weight. A model no server lists makes the pool look again (at most once a second) before the
/// call goes to any healthy server, whose own 404 then reaches the client. `OllamaPoolMonitor`
/// refreshes health, models and loaded models in the background; a server that fails leaves the
/// rotation and comes back when it answers again.
///
/// With one server there is nothing to choose: every call goes to it, and nothing is polled.
public final class OllamaPool: Sendable {
    /// What the pool knows of one server.
    public struct ServerState: Sendable {
        public var server: OllamaServer
        /// `server.displayName`, made once: every ledger row of an Ollama call carries it.
        public let name: String
        public var healthy = true
        public var models: Set<String> = []
        public var loaded: Set<String> = []
        public var inFlight = 0
        public var version: String?
        public var latencyMicros: Int64?
        public var error: String?
        public var checkedAt: ContinuousClock.Instant?

        init(server: OllamaServer) {
            self.server = server
            self.name = server.displayName
        }
    }

    let upstream: UpstreamClient
    let metrics: GatewayMetrics
    let logger: Logger
    private let state: NIOLockedValueBox<[ServerState]>
    /// The first check of every server: calls wait for it, so none is routed on empty lists.
    private let firstCheckTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    /// The check a miss started, and when: every miss within a second waits for that one.
    private let missCheck = NIOLockedValueBox<(task: Task<Void, Never>, at: ContinuousClock.Instant)?>(nil)
    private let tieBreaker = NIOLockedValueBox(0)

    public init(servers: [OllamaServer], upstream: UpstreamClient, metrics: GatewayMetrics, logger: Logger) {
        precondition(!servers.isEmpty, "the configuration names at least one server")
        self.upstream = upstream
        self.metrics = metrics
        self.logger = logger
        self.state = NIOLockedValueBox(servers.map { ServerState(server: $0) })
        self.isSingle = servers.count == 1
    }

    public var servers: [ServerState] { state.withLockedValue { $0 } }
    /// One server: every call goes to it and nothing is checked.
    public let isSingle: Bool

    // MARK: Choosing

    /// Requests a server with a model loaded takes at once per unit of weight before servers
    /// without it loaded get some: Ollama's default `OLLAMA_NUM_PARALLEL`, beyond which its
    /// requests queue on that server anyway.
    static let parallelSlots = 4

    /// A call in flight on one server, counted until `end()` (idempotent).
    final class Lease: Sendable {
        let pool: OllamaPool
        let index: Int
        let url: String
        /// The server's URL without credentials, as the ledger names it.
        let name: String
        private let ended = NIOLockedValueBox(false)

        init(pool: OllamaPool, index: Int, server: ServerState) {
            self.pool = pool
            self.index = index
            self.url = server.server.url
            self.name = server.name
        }

        func end() {
            let first = ended.withLockedValue { ended in
                defer { ended = true }
                return !ended
            }
            if first { pool.release(index) }
        }

        deinit { end() }
    }

    /// The server for a call of `model`, counted as in flight; nil when no server can take it.
    /// A model no server lists makes the pool look again (one check a second, shared by every
    /// miss), then lets any healthy server answer (its own 404 reaches the client).
    func acquire(model: String) async -> Lease? {
        if isSingle { return pick(model: model, excluding: [], requireModel: false) }
        await firstCheck()
        if let lease = pick(model: model, excluding: [], requireModel: true) { return lease }
        // `/api/version` names no model: any healthy server, without a check.
        if !model.isEmpty { await checkAfterMiss() }
        return pick(model: model, excluding: [], requireModel: true)
            ?? pick(model: model, excluding: [], requireModel: false)
    }

    /// Another healthy server that lists `model`, for the one retry of a call whose server
    /// failed it; nil when there is none (the call then ends with the first failure).
    func alternative(to failed: Int, model: String) -> Lease? {
        isSingle ? nil : pick(model: model, excluding: [failed], requireModel: true)
    }

    /// Waits for the first check of every server (started by the monitor or the first call).
    func firstCheck() async {
        guard !isSingle else { return }
        let task = firstCheckTask.withLockedValue { task in
            if task == nil { task = Task { await self.refresh() } }
            return task!
        }
        await task.value
    }

    private func checkAfterMiss() async {
        let task = missCheck.withLockedValue { last -> Task<Void, Never> in
            if let last, ContinuousClock.now - last.at < .seconds(1) { return last.task }
            let task = Task { await self.refresh() }
            last = (task, .now)
            return task
        }
        await task.value
    }

    private func pick(model: String, excluding excluded: Set<Int>, requireModel: Bool) -> Lease? {
        let turn = tieBreaker.withLockedValue { t -> Int in
            t &+= 1
            return t
        }
        return state.withLockedValue { servers -> Lease? in
            if servers.count == 1 {
                guard !excluded.contains(0) else { return nil }
                servers[0].inFlight += 1
                return Lease(pool: self, index: 0, server: servers[0])
            }
            var candidates = servers.indices.filter { !excluded.contains($0) && servers[$0].healthy }
            if requireModel {
                candidates = candidates.filter { servers[$0].models.contains(model) }
            } else if candidates.isEmpty {
                // Nothing healthy: try a server anyway, so the client hears the real failure.
                candidates = servers.indices.filter { !excluded.contains($0) }
            }
            // Fewest outstanding requests per unit of weight; ties take turns.
            func leastBusy(_ pool: [Int]) -> Int? {
                pool.enumerated().min { a, b in
                    let (x, y) = ((servers[a.element].inFlight + 1) * servers[b.element].server.weight,
                                  (servers[b.element].inFlight + 1) * servers[a.element].server.weight)
                    return x != y ? x < y : (a.offset + turn) % pool.count < (b.offset + turn) % pool.count
                }?.element
            }
            // A server with the model loaded answers without a swap, while it has a free slot;
            // once every such server is that busy, the rest share the load (and load the model).
            let loaded = candidates.filter { servers[$0].loaded.contains(model) }
            let warm = leastBusy(loaded)
            guard let best = warm.flatMap({ servers[$0].inFlight < Self.parallelSlots * servers[$0].server.weight ? $0 : nil })
                ?? leastBusy(candidates) else { return nil }
            servers[best].inFlight += 1
            return Lease(pool: self, index: best, server: servers[best])
        }
    }

    /// Sets what the checks would have found (tests of the routing, without servers).
    func assume(_ index: Int, healthy: Bool = true, models: Set<String>, loaded: Set<String> = []) {
        state.withLockedValue { servers in
            servers[index].healthy = healthy
            servers[index].models = models
            servers[index].loaded = loaded
            servers[index].checkedAt = .now
        }
        firstCheckTask.withLockedValue { task in if task == nil { task = Task {} } }
    }

    fileprivate func release(_ index: Int) {
        state.withLockedValue { $0[index].inFlight -= 1 }
    }

    /// A call's server failed before answering: it leaves the rotation until a check finds it well.
    func markFailed(_ index: Int, error: String) {
        let name = state.withLockedValue { servers -> String? in
            guard servers.count > 1 else { return nil }
            servers[index].healthy = false
            servers[index].error = error
            return servers[index].name
        }
        guard let name else { return }
        // The gauge agrees with /health from now on, not only from the next check.
        metrics.ollamaServer(name, healthy: false)
        logger.warning("an Ollama server failed; it leaves the rotation until it answers again",
                       metadata: ["server": "\(name)", "error": "\(error)"])
    }

    // MARK: Checking

    /// Checks every server at once: `/api/version` (health and latency), `/api/tags` (models) and
    /// `/api/ps` (loaded models).
    public func refresh() async {
        let servers = state.withLockedValue { $0.map(\.server) }
        await withTaskGroup(of: (Int, ServerState?).self) { group in
            for (index, server) in servers.enumerated() {
                group.addTask { (index, await self.check(server)) }
            }
            for await (index, checked) in group {
                guard let checked else { continue }
                let (wasHealthy, name) = state.withLockedValue { servers -> (Bool, String) in
                    let was = servers[index].healthy
                    var checked = checked
                    checked.inFlight = servers[index].inFlight
                    if !checked.healthy {
                        // What it served when last seen: a name it had stays an Ollama name.
                        checked.models = servers[index].models
                        checked.loaded = []
                    }
                    servers[index] = checked
                    return (was, checked.name)
                }
                metrics.ollamaServer(name, healthy: checked.healthy)
                if !wasHealthy && checked.healthy {
                    logger.notice("an Ollama server answers again and rejoins the rotation", metadata: ["server": "\(name)"])
                } else if wasHealthy && !checked.healthy {
                    logger.warning("an Ollama server failed its check and leaves the rotation",
                                   metadata: ["server": "\(name)", "error": "\(checked.error ?? "")"])
                }
            }
        }
    }

    /// How long a check waits for each answer: a server that accepts connections and never
    /// answers leaves the rotation within seconds, and holds up no caller for longer.
    static let checkTimeout: Duration = .seconds(5)

    private func check(_ server: OllamaServer) async -> ServerState {
        var checked = ServerState(server: server)
        checked.checkedAt = .now
        let started = ContinuousClock.now
        do {
            let response = try await upstream.send(method: .GET, url: server.url + "/api/version", timeout: Self.checkTimeout)
            let body = try await upstream.collect(response, limit: 1 << 16, idleTimeout: Self.checkTimeout)
            checked.latencyMicros = started.microsecondsElapsed
            guard response.status.code == 200 else { throw GatewayError.upstreamInvalid("/api/version answered \(response.status.code)") }
            checked.version = (try? JSONDocument.parse(Array(buffer: body)).root)?["version"]?.string
            let reader = ModelCatalogReader(upstream: upstream, baseURL: server.url, timeout: Self.checkTimeout)
            checked.models = try await reader.servedNames()
            checked.loaded = (try? await reader.servedNames(path: "/api/ps")) ?? []
        } catch {
            checked.healthy = false
            checked.error = UpstreamClient.classify(error).message
        }
        return checked
    }
}

/// Checks the servers every `interval` (only when there are several: one server is simply used).
struct OllamaPoolMonitor: Service {
    let pool: OllamaPool
    let interval: Duration

    func run() async throws {
        // A service that returns ends the whole group: with one server, wait for shutdown.
        guard !pool.isSingle else {
            try? await gracefulShutdown() // or cancelled, when the grace period runs out: no failure either
            return
        }
        await pool.firstCheck()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await EventLoopClock.sleep(for: interval) }
            guard !Task.isShuttingDownGracefully && !Task.isCancelled else { break }
            await pool.refresh()
        }
    }
}
