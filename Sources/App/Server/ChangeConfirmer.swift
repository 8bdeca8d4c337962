import Core
import EventLoopClock
import Foundation
import Logging

/// Confirms end to end, every `LookupCache.confirmationInterval`, that PostgreSQL's change
/// listener hears what the writers commit, so cached keys and prices stay usable past their TTL
/// only while it does.
///
/// Each round registers a fresh marker with the cache, then commits the notice `sync:TOKEN`
/// through the store, the path every writer (the CLI, the admin pages, other replicas) takes,
/// and only while `listening` says the listener holds a session of the server's own (through a
/// transaction-mode pooler it could hear the marker and miss a revocation sent to another
/// client). The store sends nothing while migration 0008's triggers are missing or disabled.
/// PostgreSQL delivers notices in commit order, so when the marker arrives on the listener,
/// every change committed before it was sent has been reported first. A listener that hears
/// nothing (a transaction-mode pooler that lost its `LISTEN`, `DATABASE_DIRECT_URL` naming
/// another database) never gets the marker back, and entries expire by their TTL as before.
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
        while !Task.isCancelled {
            do {
                try await EventLoopClock.sleep(for: interval)
            } catch {
                return
            }
            guard cache.isEnabled, listening() else { continue }
            round += 1
            let token = "\(replica)-\(round)"
            if cache.expectSync(token) {
                logger.warning("""
                    the change listener has not heard this replica's last 16 markers: cached keys and prices expire \
                    after CACHE_TTL_SECONDS until it does (are migration 0008's triggers in place, and is \
                    DATABASE_DIRECT_URL the database DATABASE_URL writes to?)
                    """)
            }
            do {
                try await store.sendChangeMarker(token)
            } catch {
                // The database is unreachable: nothing is confirmed, entries age out.
                cache.forgetSync(token)
                logger.debug("change feed marker not sent", metadata: ["error": "\(error)"])
            }
        }
    }
}
