import Core
import EventLoopClock
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// The holds of this process's requests that are still running (or still settling). Their
/// expiry is pushed forward while they live (`HoldKeeper`), so no replica's sweeper releases the
/// hold of a stream that is still being served; only a dead process's holds expire.
public final class LiveHolds: Sendable {
    private let ids = NIOLockedValueBox(Set<String>())

    public init() {}

    func add(_ id: String) { ids.withLockedValue { _ = $0.insert(id) } }
    func remove(_ id: String) { ids.withLockedValue { _ = $0.remove(id) } }
    var snapshot: [String] { ids.withLockedValue { Array($0) } }
    public var count: Int { ids.withLockedValue { $0.count } }
}

/// Extends the live holds' expiry every quarter of `HOLD_EXPIRY_SECONDS` (at most 30 s), so each
/// is renewed several times before it could expire. It runs beside the HTTP server, which stops
/// first on shutdown, so the holds of requests still draining stay alive.
struct HoldKeeper: Service {
    let store: any Store
    let holds: LiveHolds
    let expiry: Duration
    let logger: Logger

    var interval: Duration { min(.seconds(30), max(.seconds(1), expiry / 4)) }

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await EventLoopClock.sleep(for: interval) }
            await extend()
        }
    }

    func extend() async {
        let ids = holds.snapshot
        guard !ids.isEmpty else { return }
        let until = nowMicros() + Int64(expiry.components.seconds) * 1_000_000
        do {
            _ = try await store.extendHolds(ids: ids, untilMicros: until)
        } catch {
            logger.warning("could not extend the holds of running requests", metadata: [
                "count": "\(ids.count)", "error": "\(error)",
            ])
        }
    }
}
