import Core
import EventLoopClock
import Foundation
import Logging

/// Confirms end to end, every `LookupCache.confirmationInterval`, that PostgreSQL's change
/// listener hears what the writers commit, so cached keys and prices stay usable past their TTL
/// only while it does.
///
/// Each round registers a fresh marker with the cache, then commits the notice `sync:TOKEN`
/// through the store, the path every writer (the CLI, the admin pages, other replicas) takes.
/// PostgreSQL delivers notices in commit order, so when the marker arrives on the listener,
/// every change committed before it was sent has been reported first. A listener that hears
/// nothing (`DATABASE_DIRECT_URL` naming another database) never gets the marker back, and
/// entries expire by their TTL as before. The rules that keep a marker honest:
///
/// - markers go out only while `listening` says the listener holds a session of the server's
///   own: through a transaction-mode pooler it could hear the marker and miss a revocation the
///   pooler handed to another client;
/// - the store sends nothing while migration 0008's triggers are missing or disabled, and the
///   first round that sends after one that did not flushes the cache, since what was cached
///   meanwhile may hide a change that announced nothing (triggers disabled and enabled again
///   between two rounds, or before the first, go unseen: `LookupCache.maxAge` bounds that).
public struct ChangeConfirmer: Sendable {
    let cache: LookupCache
    let store: any Store
    let listening: @Sendable () -> Bool
    let logger: Logger

    public init(cache: LookupCache, store: any Store, listening: @escaping @Sendable () -> Bool, logger: Logger) {
        self.cache = cache
        self.store = store
        self.listening = listening
        self.logger = logger
    }

    /// Runs until the task is cancelled; does nothing when the cache is off (TTL 0).
    public func run() async {
        guard let interval = cache.confirmationInterval else { return }
        // Unique to this process, so replicas ignore each other's markers.
        let replica = UUID().uuidString
        var round = 0
        var state = RunState()
        while !Task.isCancelled {
            do {
                try await EventLoopClock.sleep(for: interval)
            } catch {
                return
            }
            // While the cache is off nothing is cached, and it comes back on with a flush
            // (`.connected`), as after the listener reconnects.
            guard cache.isEnabled, listening() else { continue }
            round += 1
            let token = "\(replica)-\(round)"
            state.unanswered(cache.expectSync(token), logger)
            do {
                let sent = try await store.sendChangeMarker(token)
                state.failures = 0
                guard sent else {
                    cache.forgetSync(token)
                    state.notSent(logger)
                    continue
                }
                state.warnedNotSent = false
                // Entries cached while no marker went out (the triggers were off, the database
                // out of reach) may hide a change that announced nothing meanwhile: this marker
                // must not vouch for them.
                if !state.sentLastRound { cache.handle(.flush) }
                state.sentLastRound = true
            } catch {
                cache.forgetSync(token)
                state.failed(error, logger)
            }
        }
    }

    /// What the rounds so far imply, and which warnings have been given (once per run of trouble).
    struct RunState {
        /// Markers went out last round (at start: nothing cached yet needs a flush).
        var sentLastRound = true
        var failures = 0
        var warnedUnanswered = false
        var warnedNotSent = false

        mutating func unanswered(_ count: Int, _ logger: Logger) {
            if count <= 1 { warnedUnanswered = false }
            guard count >= 16, !warnedUnanswered else { return }
            warnedUnanswered = true
            logger.warning("""
                the change listener has not heard this replica's last 16 markers: idle cached keys and prices are not \
                renewed past CACHE_TTL_SECONDS until it does (is DATABASE_DIRECT_URL the database DATABASE_URL writes to?)
                """)
        }

        mutating func notSent(_ logger: Logger) {
            sentLastRound = false
            guard !warnedNotSent else { return }
            warnedNotSent = true
            logger.warning("""
                migration 0008's change triggers are missing or disabled: no change marker is sent, and idle cached keys \
                and prices are not renewed past CACHE_TTL_SECONDS (run lmsvr migrate, or enable the triggers)
                """)
        }

        mutating func failed(_ error: any Error, _ logger: Logger) {
            sentLastRound = false
            failures += 1
            // A database out of reach also fails the requests, which say so; warn only when it lasts.
            if failures == 3 { logger.warning("change markers cannot be sent", metadata: ["error": "\(error)"]) }
        }
    }
}
