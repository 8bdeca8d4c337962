import Core
import EventLoopClock
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle

/// The HTTP gateway: the router with every route, and the services that run beside it.
public struct Gateway: Sendable {
    public let configuration: Configuration
    public let store: any Store
    public let upstream: UpstreamClient
    public let logger: Logger
    public let metrics: GatewayMetrics
    /// Key and price caches; enabled only while a change feed reports `.connected`.
    public let cache: LookupCache
    /// The holds of requests this process is serving, kept alive while they run.
    public let liveHolds = LiveHolds()
    /// Settles no request task waits for; shutdown waits for them.
    let detachedSettles = DetachedSettles()
    /// Settles the database could not take yet.
    public let journal: SettleJournal
    /// When keys were last used, written in batches.
    public let keyUse = KeyUseRecorder()
    /// The Ollama servers and which one serves each call.
    public let ollama: OllamaPool

    public init(configuration: Configuration, store: any Store, upstream: UpstreamClient, journal: SettleJournal,
                logger: Logger, metrics: GatewayMetrics = GatewayMetrics()) {
        self.configuration = configuration
        self.store = store
        self.upstream = upstream
        self.journal = journal
        self.logger = logger
        self.metrics = metrics
        self.cache = LookupCache(ttlSeconds: configuration.cacheTTLSeconds, onReconnect: { metrics.listenerReconnected() })
        self.ollama = OllamaPool(servers: configuration.ollamaServers, upstream: upstream, metrics: metrics, logger: logger)
    }

    /// The router with all routes and the gateway middleware.
    public func router() -> Router<GatewayContext> {
        let router = Router(context: GatewayContext.self)
        router.add(middleware: GatewayMiddleware(authenticator: Authenticator(store: store, logger: logger, cache: cache,
                                                                                 keyUse: keyUse),
                                                 journal: journal, logger: logger, metrics: metrics,
                                                 maxBodyBytes: configuration.maxBodyBytes))
        let billing = Billing(store: store, configuration: configuration, logger: logger, metrics: metrics, cache: cache,
                              liveHolds: liveHolds, journal: journal, detached: detachedSettles)
        let metered = MeteredCall(billing: billing, upstream: upstream, ollama: ollama)
        router.get("/metrics") { [metrics, store, journal, ollama] _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition(pool: store.poolStatistics, journal: journal,
                                                                                  ollama: ollama))))
        }
        HealthRoutes(store: store, upstream: upstream, journal: journal, configuration: configuration, ollama: ollama)
            .register(on: router)
        OllamaRoutes(upstream: upstream, metered: metered, store: store, configuration: configuration, ollama: ollama)
            .register(on: router)
        let modelRouter = ModelRouter(upstream: upstream, configuration: configuration, logger: logger, ollama: ollama)
        OpenAIRoutes(metered: metered, router: modelRouter, configuration: configuration).register(on: router)
        AnthropicRoutes(metered: metered, router: modelRouter, configuration: configuration).register(on: router)
        ModelListRoutes(upstream: upstream, store: store, configuration: configuration, ollama: ollama).register(on: router)
        SelfServiceRoutes(store: store).register(on: router)
        DashboardRoutes(store: store, ollama: ollama, configuration: configuration, logger: logger).register(on: router)
        return router
    }

    /// Hummingbird closes a connection idle this long: no request in flight, or one whose head or
    /// body stopped arriving (a client that trickles a request never finishes it). A response
    /// being written is never idle, so streams of any length are untouched.
    private var clientIdleTimeout: TimeAmount? {
        configuration.clientIdleTimeoutSeconds > 0 ? .seconds(Int64(configuration.clientIdleTimeoutSeconds)) : nil
    }

    /// The application, listening on the configured address; `onServerRunning` learns the port.
    public func application(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol
    {
        Application(
            responder: ChildTaskResponder(router: router().buildResponder()),
            server: HTTPServerBuilder { [idleTimeout = clientIdleTimeout] responder in
                SmallReadsHTTP1Channel(http1: HTTP1Channel(responder: responder, configuration: .init(idleTimeout: idleTimeout)))
            },
            // A burst of clients (a thousand streams opened at once) must not overflow the accept
            // queue: a dropped SYN is retried by the client only after 1 s, then 3 s. 4,096 is
            // Linux's default cap (net.core.somaxconn), which lowers it where it is smaller.
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "lmsvr",
                                 backlog: 4096),
            // Started before the server and stopped after it (in reverse), so requests still
            // draining keep their holds alive and get their settles written.
            services: [JournalDrainer(journal: journal, store: store, liveHolds: liveHolds, metrics: metrics, logger: logger),
                       HoldReleaser(store: store, logger: logger,
                                    interval: .seconds(max(1, min(30, configuration.holdExpirySeconds / 4)))),
                       HoldKeeper(store: store, holds: liveHolds, expiry: .seconds(configuration.holdExpirySeconds),
                                  logger: logger),
                       KeyUseFlusher(recorder: keyUse, store: store, interval: .seconds(30), logger: logger),
                       OllamaPoolMonitor(pool: ollama, interval: .seconds(configuration.ollamaCheckIntervalSeconds))],
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Writes what the journal holds (adopted from a previous run included) to the database
    /// before serving, for as long as the database takes it. Returns how many were written;
    /// anything left is drained while serving.
    public func replayJournal() async -> Int {
        // Keep the holds of these requests from expiring while they wait.
        let ids = journal.first(Int.max).map(\.requestId)
        for id in ids { liveHolds.add(id) }
        _ = try? await store.extendHolds(ids: ids, untilMicros: nowMicros() + Int64(configuration.holdExpirySeconds) * 1_000_000)
        var written = 0
        while let usage = journal.first {
            do {
                _ = try await store.settle(holdId: usage.requestId, usage: usage)
            } catch {
                logger.warning("could not replay the settle journal yet; it drains while serving", metadata: [
                    "left": "\(journal.depth)", "error": "\(error)",
                ])
                break
            }
            journal.removeFirst()
            liveHolds.remove(usage.requestId)
            metrics.journalReplayed()
            written += 1
        }
        return written
    }

    /// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests (streams
    /// included) finish and settle within the grace period, and returns. Requests still running
    /// when the grace period ends are cut, each settled for what it delivered (or journaled),
    /// and it returns normally then too: that is the shutdown asked for, not a failure.
    public func run(onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let shutdown = ShutdownWitness()
        var groupConfiguration = ServiceGroupConfiguration(
            services: [.init(service: application(onServerRunning: onServerRunning)), .init(service: shutdown)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        let grace = Duration.seconds(configuration.shutdownGraceSeconds)
        groupConfiguration.maximumGracefulShutdownDuration = grace
        var failure: (any Error)?
        do {
            try await ServiceGroup(configuration: groupConfiguration).run()
        } catch {
            failure = error
        }
        // ServiceGroup's timer starts a moment before the witness notes the shutdown: allow for it.
        let graceRanOut = shutdown.began.map { ContinuousClock.now - $0 >= grace - .milliseconds(100) } ?? false
        // ServiceGroup cancels what is still running when the grace period ends (a service may end
        // by rethrowing that cancellation); the requests it cut settle on their way out.
        if failure is CancellationError && graceRanOut && !Task.isCancelled { failure = nil }
        if !(await detachedSettles.drained(within: .seconds(5))) {
            logger.error("stopping with settles still running; their holds are released after HOLD_EXPIRY_SECONDS",
                         metadata: ["settles": "\(detachedSettles.count)"])
        }
        if graceRanOut {
            logger.warning("the shutdown grace period ran out: any request still running was cut and charged for what it delivered",
                           metadata: ["grace_seconds": "\(configuration.shutdownGraceSeconds)"])
        }
        if let failure { throw failure }
    }

}

/// Releases holds that outlived their expiry (their process died mid-request: live requests'
/// holds are extended by `HoldKeeper`), every quarter of the expiry (at most 30 s), so a dead
/// replica's holds are back within 1.25 × the expiry; and keeps the ledger's month partitions
/// made ahead.
struct HoldReleaser: Service {
    let store: any Store
    let logger: Logger
    let interval: Duration

    func run() async throws {
        var ledgerPreparedAt: ContinuousClock.Instant?
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let released = try await store.releaseExpiredHolds(nowMicros: nowMicros(), limit: 500)
                if released > 0 { logger.notice("released expired holds", metadata: ["count": "\(released)"]) }
                // The ledger's partitions for this month and the next, made ahead (hourly).
                if ledgerPreparedAt.map({ ContinuousClock.now - $0 > .seconds(3600) }) ?? true {
                    try await store.prepareLedger(nowMicros: nowMicros())
                    ledgerPreparedAt = .now
                }
            } catch {
                logger.warning("could not release expired holds", metadata: ["error": "\(error)"])
            }
            try? await cancelWhenGracefulShutdown { try await EventLoopClock.sleep(for: interval) }
        }
    }
}
