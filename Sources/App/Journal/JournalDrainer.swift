import Core
import EventLoopClock
import Logging
import ServiceLifecycle

/// Writes the journal's settles to the database, oldest first, as soon as it takes them: within
/// moments of an outage ending, with no restart. A settle the database refuses for good (not
/// an outage: its data is rejected) is retried a few times, then set aside in a file beside the
/// journal and reported, never dropped.
///
/// On shutdown it keeps draining until the grace period runs out, then leaves what is left for
/// the next start (which adopts it) and says so.
struct JournalDrainer: Service {
    let journal: SettleJournal
    let store: any Store
    let liveHolds: LiveHolds
    let metrics: GatewayMetrics
    let logger: Logger

    /// How often an empty journal is looked at.
    static let idlePoll: Duration = .milliseconds(100)
    static let maxBackoff: Duration = .seconds(2)
    static let attemptsBeforeSettingAside = 5

    /// How often the journal directory is looked at for files of replicas that died (where
    /// replicas share a volume, the living take over the dead ones' charges).
    static let adoptionInterval: Duration = .seconds(30)

    func run() async throws {
        var backoff: Duration = .milliseconds(50)
        var failures = (requestId: "", count: 0)
        var lastAdoption = ContinuousClock.now
        while !Task.isCancelled {
            if ContinuousClock.now - lastAdoption > Self.adoptionInterval {
                lastAdoption = .now
                if let adopted = try? await journal.adoptOrphans() {
                    for usage in adopted { liveHolds.add(usage.requestId) }
                }
            }
            guard let usage = journal.first else {
                journal.databaseAccepts = true
                if Task.isShuttingDownGracefully { break }
                try? await cancelWhenGracefulShutdown { try await EventLoopClock.sleep(for: Self.idlePoll) }
                continue
            }
            do {
                let result = try await store.settle(holdId: usage.requestId, usage: usage)
                if result == .settledWithoutHold { metrics.settledWithoutHold() }
                journal.removeFirst()
                liveHolds.remove(usage.requestId)
                metrics.journalReplayed()
                journal.databaseAccepts = true
                backoff = .milliseconds(50)
                if journal.isEmpty { logger.notice("the settle journal is drained: every charge is in the database") }
            } catch let error as StoreError where error.isOutage {
                // The database is still away: wait and try the same record again.
                try? await EventLoopClock.sleep(for: backoff)
                backoff = min(backoff * 2, Self.maxBackoff)
            } catch {
                failures = failures.requestId == usage.requestId ? (usage.requestId, failures.count + 1) : (usage.requestId, 1)
                try? await EventLoopClock.sleep(for: backoff)
                backoff = min(backoff * 2, Self.maxBackoff)
                // Set aside only once it is on disk there; until then it stays in the journal.
                guard failures.count >= Self.attemptsBeforeSettingAside, await journal.setAside(usage) else { continue }
                journal.removeFirst()
                liveHolds.remove(usage.requestId)
                metrics.usageWriteFailed()
                logger.error("the database refused a journaled settle; it is kept in rejected-settles.jsonl", metadata: [
                    "request_id": "\(usage.requestId)", "cost_usd": "\(usage.cost.decimalString)", "error": "\(error)",
                ])
            }
        }
        if !journal.isEmpty {
            logger.warning("settles left in the journal for the next start", metadata: [
                "count": "\(journal.depth)", "path": "\(journal.path)",
            ])
        }
    }
}
