import Core
import CoreMetrics
import Foundation
import Metrics
import NIOConcurrencyHelpers
import Prometheus

/// The gateway's Prometheus metrics, exposed at `GET /metrics`.
///
/// Metrics are made through this instance's own factory and registry (not the global
/// `MetricsSystem`), so several gateways in one process (the tests) never share counters.
/// Model names only label requests that reached an upstream, so made-up names cannot blow up
/// the number of series.
public final class GatewayMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    private let openStreamsGauge: Metrics.Gauge
    private let openStreamsCount = NIOLockedValueBox(0)
    private let budgetRefusals: Metrics.Counter
    private let usageWriteFailures: Metrics.Counter
    private let settlesWithoutHold: Metrics.Counter
    private let journalWrites: Metrics.Counter
    private let journalReplays: Metrics.Counter
    private let journalDepth: Metrics.Gauge
    private let journalAge: Metrics.Gauge
    private let listenerReconnects: Metrics.Counter
    private let poolOpen: Metrics.Gauge
    private let poolIdle: Metrics.Gauge
    private let poolWaiting: Metrics.Gauge
    /// Handles by label set, made once each: the factory's path (registry lookup, label checks, a
    /// new handle) is paid on a label set's first use, not on every request, and a known label
    /// set is found without building its dimension list.
    private let counters = NIOLockedValueBox<[LabelSet: Metrics.Counter]>([:])
    private let timers = NIOLockedValueBox<[LabelSet: Metrics.Timer]>([:])

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [.microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5),
                                          .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                          .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
                                          .seconds(10), .seconds(30), .seconds(60), .seconds(300)]
        factory.defaultDurationHistogramBuckets = latencyBuckets
        self.factory = factory
        openStreamsGauge = Gauge(label: "lmsvr_open_streams", factory: factory)
        budgetRefusals = Counter(label: "lmsvr_budget_refusals_total", factory: factory)
        usageWriteFailures = Counter(label: "lmsvr_usage_write_failures_total", factory: factory)
        settlesWithoutHold = Counter(label: "lmsvr_settles_without_hold_total", factory: factory)
        journalWrites = Counter(label: "lmsvr_journal_writes_total", factory: factory)
        journalReplays = Counter(label: "lmsvr_journal_replays_total", factory: factory)
        journalDepth = Gauge(label: "lmsvr_journal_depth", factory: factory)
        journalAge = Gauge(label: "lmsvr_journal_oldest_age_seconds", factory: factory)
        listenerReconnects = Counter(label: "lmsvr_listener_reconnects_total", factory: factory)
        poolOpen = Gauge(label: "lmsvr_db_pool_connections", dimensions: [("state", "open")], factory: factory)
        poolIdle = Gauge(label: "lmsvr_db_pool_connections", dimensions: [("state", "idle")], factory: factory)
        poolWaiting = Gauge(label: "lmsvr_db_pool_waiting_requests", factory: factory)
    }

    /// The counter `label` with the values of its dimensions `names`, in order.
    private func counter(_ label: String, _ names: [String], _ v0: String, _ v1: String = "", _ v2: String = "",
                         _ v3: String = "", _ v4: String = "") -> Metrics.Counter {
        let key = LabelSet(label: label, v0: v0, v1: v1, v2: v2, v3: v3, v4: v4)
        return Self.handle(counters, key) { Counter(label: label, dimensions: key.dimensions(names), factory: factory) }
    }

    /// The timer `label` with the values of its dimensions `names`, in order.
    private func timer(_ label: String, _ names: [String], _ v0: String, _ v1: String = "") -> Metrics.Timer {
        let key = LabelSet(label: label, v0: v0, v1: v1, v2: "", v3: "", v4: "")
        return Self.handle(timers, key) { Metrics.Timer(label: label, dimensions: key.dimensions(names), factory: factory) }
    }

    /// The cached handle for a label set, made (outside the lock) on its first use.
    private static func handle<Handle: Sendable>(_ cache: NIOLockedValueBox<[LabelSet: Handle]>, _ key: LabelSet,
                                                 make: () -> Handle) -> Handle {
        if let known = cache.withLockedValue({ $0[key] }) { return known }
        let made = make()
        return cache.withLockedValue { handles in
            if let known = handles[key] { return known }
            handles[key] = made
            return made
        }
    }

    /// One finished HTTP request, by route pattern, dialect and status.
    func request(route: String, dialect: Dialect, status: Int, latency: Duration) {
        counter("lmsvr_requests_total", Names.routeDialectStatus, route, dialect.rawValue, String(status)).increment()
        timer("lmsvr_request_duration_seconds", Names.routeDialect, route, dialect.rawValue)
            .recordNanoseconds(Int64(latency.components.seconds) * 1_000_000_000 + latency.components.attoseconds / 1_000_000_000)
    }

    /// One settled (ledger) request: by dialect, model, provider and outcome, with its tokens,
    /// cost and time to first byte.
    func settled(_ usage: UsageRecord) {
        // Only names an upstream answered to label series: a made-up name never gets that far.
        let model = [.ok, .clientCancelled, .outputLimit].contains(usage.outcome) ? usage.model : "-"
        counter("lmsvr_metered_requests_total", Names.metered, usage.dialect, usage.provider, model,
                usage.outcome.rawValue, String(usage.httpStatus)).increment()
        if usage.promptTokens > 0 {
            counter("lmsvr_tokens_total", Names.modelKind, model, "prompt")
                .increment(by: usage.promptTokens)
        }
        if usage.completionTokens > 0 {
            counter("lmsvr_tokens_total", Names.modelKind, model, "completion")
                .increment(by: usage.completionTokens)
        }
        if usage.cost.nanos > 0 {
            counter("lmsvr_cost_nanodollars_total", Names.model, model)
                .increment(by: usage.cost.nanos)
        }
        if let ttfb = usage.timeToFirstByteMicros {
            timer("lmsvr_time_to_first_byte_seconds", Names.dialect, usage.dialect)
                .recordMicroseconds(ttfb)
        }
        if usage.outcome == .upstreamError {
            let kind = switch usage.httpStatus {
            case 502: "unreachable"
            case 504: "timeout"
            case 200: "midstream"
            default: "status_\(usage.httpStatus)"
            }
            counter("lmsvr_upstream_errors_total", Names.providerKind, usage.provider, kind).increment()
        }
    }

    func budgetRefused() { budgetRefusals.increment() }
    /// A request refused by a rate or concurrency limit, by whose limit and which.
    func rateLimited(_ refusal: LimitRefusal) {
        let subject = switch refusal.subject {
        case .key: "key"
        case .customer: "customer"
        }
        counter("lmsvr_rate_limited_total", Names.subjectLimit, subject, refusal.kind.rawValue).increment()
    }
    func usageWriteFailed() { usageWriteFailures.increment() }
    func settledWithoutHold() { settlesWithoutHold.increment() }
    /// A settle the database could not take went to the journal.
    func journaled() { journalWrites.increment() }
    /// A journaled settle reached the database.
    func journalReplayed() { journalReplays.increment() }
    func listenerReconnected() { listenerReconnects.increment() }

    func streamOpened() { openStreamsGauge.record(openStreamsCount.withLockedValue { $0 += 1; return $0 }) }
    func streamClosed() { openStreamsGauge.record(openStreamsCount.withLockedValue { $0 -= 1; return $0 }) }

    // MARK: Ollama servers

    /// One metered call's answer (or failure: `status` nil) from an Ollama server, and how long
    /// its head took.
    func ollamaCall(_ server: String, status: Int?, since started: ContinuousClock.Instant) {
        counter("lmsvr_ollama_requests_total", Names.serverStatus, server, status.map(String.init) ?? "failed").increment()
        if status.map({ $0 >= 500 }) ?? true {
            counter("lmsvr_ollama_errors_total", Names.server, server).increment()
        }
        let elapsed = ContinuousClock.now - started
        timer("lmsvr_ollama_response_seconds", Names.server, server)
            .recordNanoseconds(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
    }

    /// A server's health after a check (1 healthy, 0 out of the rotation).
    func ollamaServer(_ server: String, healthy: Bool) {
        Gauge(label: "lmsvr_ollama_healthy", dimensions: [("server", server)], factory: factory).record(healthy ? 1 : 0)
    }

    /// The Prometheus text exposition, with the database pool, the journal and the Ollama
    /// servers' requests in flight sampled now.
    func exposition(pool: PoolStatistics?, journal: SettleJournal, ollama: OllamaPool? = nil) -> [UInt8] {
        for server in ollama?.servers ?? [] {
            Gauge(label: "lmsvr_ollama_in_flight", dimensions: [("server", server.server.displayName)], factory: factory)
                .record(server.inFlight)
        }
        journalDepth.record(journal.depth)
        journalAge.record(journal.oldestMicros.map { Double(nowMicros() - $0) / 1_000_000 } ?? 0)
        if let pool {
            poolOpen.record(pool.open)
            poolIdle.record(pool.idle)
            poolWaiting.record(pool.waiting)
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

/// A metric's name and its label values, in the order of its dimension names: the key of a
/// cached handle. Up to five values, stored inline (no array to allocate per lookup).
private struct LabelSet: Hashable {
    let label: String
    let v0: String, v1: String, v2: String, v3: String, v4: String

    /// The dimensions for the factory: `names` paired with the values, in order.
    func dimensions(_ names: [String]) -> [(String, String)] {
        Array(zip(names, [v0, v1, v2, v3, v4]))
    }
}

/// The dimension names of each metric, made once.
private enum Names {
    static let routeDialectStatus = ["route", "dialect", "status"]
    static let routeDialect = ["route", "dialect"]
    static let metered = ["dialect", "provider", "model", "outcome", "status"]
    static let modelKind = ["model", "kind"]
    static let model = ["model"]
    static let dialect = ["dialect"]
    static let providerKind = ["provider", "kind"]
    static let subjectLimit = ["subject", "limit"]
    static let serverStatus = ["server", "status"]
    static let server = ["server"]
}
