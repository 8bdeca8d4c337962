import Core
import NIOConcurrencyHelpers

/// Caches key and price lookups, kept honest by a change feed (PostgreSQL LISTEN/NOTIFY, or
/// `SQLiteChangeWatcher` on SQLite):
///
/// - used only while the feed is connected; while it is down every lookup reads the database;
/// - a notice evicts what it names (`key:ID`, `customer:ID`, every price on `price:…`);
/// - every (re)connect flushes everything, since notices in the gap may be lost;
/// - an entry expires the TTL after the last moment it was known current: its read, or the
///   latest confirmation that nothing changed. SQLite's watcher reports `.unchanged` for every
///   poll that found nothing changed. On PostgreSQL, `ChangeConfirmer` commits a `sync:TOKEN`
///   notice through the writers' path every `confirmationInterval` (`expectSync` first), and
///   its arrival on the listener confirms everything as of the moment it was sent: notices are
///   delivered in commit order, so every change committed before then was reported first, and
///   a listener that hears nothing (a pooler that lost its `LISTEN`, another database)
///   confirms nothing. So keys and prices idle for longer than the TTL stay cached while the
///   feed works, and the TTL bounds staleness if it stops: no entry is used more than the TTL
///   after a change it missed. A change no notice reports at all (a write that fired no
///   trigger) is seen within `maxAge` of the entry's read, however many confirmations came;
/// - a price is also used only until the next row of its model comes into force by its date
///   (`effective_from_us`), which happens with no commit to report;
/// - the feed sees only other processes' changes (on SQLite, commits on another connection): a
///   server that ever writes keys, customers or prices itself must call `handle(.flush)`, or
///   what it changed stays cached for as long as the feed runs;
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
        /// Every cached entry is current as of this instant (the feed's latest `.unchanged`).
        var unchangedAsOf: ContinuousClock.Instant?
        var principals: [String: (principal: Principal, expires: ContinuousClock.Instant)] = [:]
        var prices: [String: CachedPrice] = [:]
        /// Markers sent and not yet heard back, with the moment each was registered.
        var pendingSyncs: [String: ContinuousClock.Instant] = [:]

        mutating func confirm(asOf instant: ContinuousClock.Instant) {
            if enabled { unchangedAsOf = max(unchangedAsOf ?? instant, instant) }
        }

        mutating func dropEntries() {
            principals = [:]
            prices = [:]
        }
    }

    struct CachedPrice {
        var price: ModelPrice
        var source: PriceSource
        var expires: ContinuousClock.Instant
        /// When the model's next price row comes into force (wall-clock microseconds), if any.
        var nextChangeMicros: Int64?
    }

    let ttl: Duration
    /// The longest an entry is used after its read, confirmed or not: 12 TTLs, at least a minute.
    let maxAge: Duration
    private let state = NIOLockedValueBox(State())
    private let onReconnect: @Sendable () -> Void
    /// The clock, for tests that move time by hand.
    private let now: @Sendable () -> ContinuousClock.Instant

    public init(ttlSeconds: Double, onReconnect: @escaping @Sendable () -> Void = {},
                now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.ttl = .milliseconds(Int64(ttlSeconds * 1000))
        self.maxAge = max(ttl * 12, .seconds(60))
        self.onReconnect = onReconnect
        self.now = now
    }

    /// Whether lookups are currently served from the cache (the feed is connected).
    public var isEnabled: Bool { state.withLockedValue { $0.enabled } }

    /// How often PostgreSQL's markers should confirm that nothing changed: every half TTL, so
    /// idle entries are renewed before they expire (within 0.1–5 s); nil without a cache.
    public var confirmationInterval: Duration? {
        ttl > .zero ? min(max(ttl / 2, .milliseconds(100)), .seconds(5)) : nil
    }

    /// Registers a marker about to be sent (`ChangeConfirmer`): when `sync:TOKEN` arrives on the
    /// feed, everything cached is confirmed current as of now, the moment before it was sent.
    /// Returns how many earlier markers are still unanswered; at most 16 are kept (a listener
    /// that hears nothing never answers them).
    @discardableResult
    func expectSync(_ token: String) -> Int {
        let now = now()
        return state.withLockedValue { state in
            guard state.enabled else { return 0 }
            let unanswered = state.pendingSyncs.count
            if unanswered >= 16 { state.pendingSyncs = [:] }
            state.pendingSyncs[token] = now
            return unanswered
        }
    }

    /// Drops a marker that could not be sent.
    func forgetSync(_ token: String) {
        state.withLockedValue { _ = $0.pendingSyncs.removeValue(forKey: token) }
    }

    // MARK: Feed

    public func handle(_ event: ChangeEvent) {
        // Confirmations invalidate nothing, so lookups under way may still cache what they read.
        if case .unchanged(let instant) = event {
            state.withLockedValue { $0.confirm(asOf: instant) }
            return
        }
        if case .notice(let payload) = event, case .sync(let token) = ChangeNoticeKind(payload) {
            // Another replica's marker, or one from before a reconnect, confirms nothing here.
            state.withLockedValue { state in
                if let sent = state.pendingSyncs.removeValue(forKey: token) { state.confirm(asOf: sent) }
            }
            return
        }
        let reconnected = state.withLockedValue { state -> Bool in
            state.generation &+= 1
            state.unchangedAsOf = nil
            switch event {
            case .connected:
                state.dropEntries()
                state.pendingSyncs = [:]
                state.enabled = ttl > .zero
                state.connections += 1
                return state.connections > 1
            case .disconnected:
                state.enabled = false
                state.dropEntries()
                state.pendingSyncs = [:]
            case .flush:
                state.dropEntries()
            case .notice(let payload):
                switch ChangeNoticeKind(payload) {
                case .key(let id): state.principals = state.principals.filter { $0.value.principal.keyId != id }
                case .customer(let id): state.principals = state.principals.filter { $0.value.principal.customerId != id }
                case .price: state.prices = [:]
                // A TRUNCATE (migration 0008's statement triggers), or a payload this version
                // does not know: whatever it was, drop everything.
                case .flush, .unknown: state.dropEntries()
                case .sync: break // confirmations are handled above, before the generation moves
                }
            case .unchanged:
                break
            }
            return false
        }
        if reconnected { onReconnect() }
    }

    // MARK: Lookups

    /// A fresh cached principal, or nil (then read the database and `remember`).
    func principal(forHash hash: String) -> Principal? {
        let now = now()
        return state.withLockedValue { state in
            guard state.enabled, let entry = state.principals[hash],
                  isCurrent(entry.expires, state, now) else { return nil }
            return entry.principal
        }
    }

    /// Whether an entry read `ttl` before `expires` may be used at `now`: within its own TTL,
    /// or within the TTL of the latest confirmation, for at most `maxAge` after its read. Every
    /// entry was read after the last flush (a flush empties the cache, and a lookup that began
    /// before one is not cached), so a confirmation vouches for it; `maxAge` bounds a change no
    /// notice reported (a write that fired no trigger) while confirmations keep coming.
    private func isCurrent(_ expires: ContinuousClock.Instant, _ state: State, _ now: ContinuousClock.Instant) -> Bool {
        expires > now || (state.unchangedAsOf.map { $0 + ttl > now } ?? false && expires - ttl + maxAge > now)
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
            state.principals[hash] = (principal, now() + ttl)
        }
    }

    /// The cached price of `model` at `nowMicros` (wall clock, as price rows are dated), or nil.
    func price(for model: String, nowMicros: Int64) -> (ModelPrice, PriceSource)? {
        let now = now()
        return state.withLockedValue { state in
            guard state.enabled, let entry = state.prices[model],
                  isCurrent(entry.expires, state, now),
                  entry.nextChangeMicros.map({ nowMicros < $0 }) ?? true else { return nil }
            return (entry.price, entry.source)
        }
    }

    /// `nextChangeMicros`: when the next price row of the model comes into force, if one is
    /// scheduled; the entry is not used from then on.
    func remember(_ price: ModelPrice, source: PriceSource, nextChangeMicros: Int64?, for model: String, generation: UInt64?) {
        guard let generation else { return }
        state.withLockedValue { state in
            guard state.enabled, state.generation == generation else { return }
            if state.prices.count >= Self.maxEntries { state.prices = [:] }
            state.prices[model] = CachedPrice(price: price, source: source, expires: now() + ttl, nextChangeMicros: nextChangeMicros)
        }
    }
}

/// A parsed change notice payload.
enum ChangeNoticeKind {
    case key(Int64)
    case customer(Int64)
    case price(String)
    case sync(String)
    case flush
    case unknown

    init(_ payload: String) {
        if payload == "flush" { self = .flush; return }
        let parts = payload.split(separator: ":", maxSplits: 1)
        guard parts.count == 2 else { self = .unknown; return }
        switch parts[0] {
        case "key": self = Int64(parts[1]).map(ChangeNoticeKind.key) ?? .unknown
        case "customer": self = Int64(parts[1]).map(ChangeNoticeKind.customer) ?? .unknown
        case "price": self = .price(String(parts[1]))
        case "sync": self = .sync(String(parts[1]))
        default: self = .unknown
        }
    }
}
