import Core
import NIOConcurrencyHelpers

/// Caches key and price lookups, kept honest by a change feed (PostgreSQL LISTEN/NOTIFY, or
/// `SQLiteChangeWatcher` on SQLite):
///
/// - used only while the feed is connected; while it is down every lookup reads the database;
/// - a notice evicts what it names (`key:ID`, `customer:ID`, every price on `price:…`);
/// - every (re)connect flushes everything, since notices in the gap may be lost;
/// - entries expire after the TTL whatever happens, bounding staleness if a notice is lost;
/// - a lookup that started before a notice is not cached (generation check), so a revocation
///   committed during a lookup cannot be undone by it.
///
/// Without a feed (a gateway built in a test) the cache stays disabled: every lookup reads the
/// database.
public final class LookupCache: Sendable {
    struct State {
        var enabled = false
        var generation: UInt64 = 0
        var connections = 0
        var principals: [String: (principal: Principal, expires: ContinuousClock.Instant)] = [:]
        var prices: [String: (price: ModelPrice, source: PriceSource, expires: ContinuousClock.Instant)] = [:]
    }

    let ttl: Duration
    private let state = NIOLockedValueBox(State())
    private let onReconnect: @Sendable () -> Void

    public init(ttlSeconds: Double, onReconnect: @escaping @Sendable () -> Void = {}) {
        self.ttl = .milliseconds(Int64(ttlSeconds * 1000))
        self.onReconnect = onReconnect
    }

    /// Whether lookups are currently served from the cache (the feed is connected).
    public var isEnabled: Bool { state.withLockedValue { $0.enabled } }

    // MARK: Feed

    public func handle(_ event: ChangeEvent) {
        let reconnected = state.withLockedValue { state -> Bool in
            state.generation &+= 1
            switch event {
            case .connected:
                state.principals = [:]
                state.prices = [:]
                state.enabled = ttl > .zero
                state.connections += 1
                return state.connections > 1
            case .disconnected:
                state.enabled = false
                state.principals = [:]
                state.prices = [:]
            case .flush:
                state.principals = [:]
                state.prices = [:]
            case .notice(let payload):
                switch ChangeNoticeKind(payload) {
                case .key(let id): state.principals = state.principals.filter { $0.value.principal.keyId != id }
                case .customer(let id): state.principals = state.principals.filter { $0.value.principal.customerId != id }
                case .price, .unknown: state.prices = [:]
                }
            }
            return false
        }
        if reconnected { onReconnect() }
    }

    // MARK: Lookups

    /// A fresh cached principal, or nil (then read the database and `remember`).
    func principal(forHash hash: String) -> Principal? {
        state.withLockedValue { state in
            guard state.enabled, let entry = state.principals[hash], entry.expires > .now else { return nil }
            return entry.principal
        }
    }

    /// The generation to pass to `remember` for a lookup starting now; nil when disabled.
    func generation() -> UInt64? {
        state.withLockedValue { $0.enabled ? $0.generation : nil }
    }

    /// At most this many entries of each kind: prices are keyed by a name the client chose
    /// (valid and normalised, but still the client's choice), so the cache must not grow with
    /// the names a client can invent. When full, it starts over.
    static let maxEntries = 10_000

    func remember(_ principal: Principal, forHash hash: String, generation: UInt64?) {
        guard let generation else { return }
        state.withLockedValue { state in
            guard state.enabled, state.generation == generation else { return }
            if state.principals.count >= Self.maxEntries { state.principals = [:] }
            state.principals[hash] = (principal, .now + ttl)
        }
    }

    func price(for model: String) -> (ModelPrice, PriceSource)? {
        state.withLockedValue { state in
            guard state.enabled, let entry = state.prices[model], entry.expires > .now else { return nil }
            return (entry.price, entry.source)
        }
    }

    func remember(_ price: ModelPrice, source: PriceSource, for model: String, generation: UInt64?) {
        guard let generation else { return }
        state.withLockedValue { state in
            guard state.enabled, state.generation == generation else { return }
            if state.prices.count >= Self.maxEntries { state.prices = [:] }
            state.prices[model] = (price, source, .now + ttl)
        }
    }
}

/// A parsed change notice payload.
enum ChangeNoticeKind {
    case key(Int64)
    case customer(Int64)
    case price(String)
    case unknown

    init(_ payload: String) {
        let parts = payload.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { self = .unknown; return }
        switch parts[0] {
        case "key": self = Int64(parts[1]).map(ChangeNoticeKind.key) ?? .unknown
        case "customer": self = Int64(parts[1]).map(ChangeNoticeKind.customer) ?? .unknown
        case "price": self = .price(String(parts[1]))
        default: self = .unknown
        }
    }
}
