import EventLoopClock
import NIOConcurrencyHelpers

/// Settles that no request task waits for: those of a metered call dropped without settling
/// (`Settlement.deinit`, e.g. a request cancelled between its response and its head being
/// written). They are counted so shutdown can wait for them before the store closes.
final class DetachedSettles: Sendable {
    private let running = NIOLockedValueBox(0)

    /// How many are still running.
    var count: Int { running.withLockedValue { $0 } }

    /// Runs `settle` in a task of its own, counted until it returns.
    func start(_ settle: @escaping @Sendable () async -> Void) {
        running.withLockedValue { $0 += 1 }
        Task { [running] in
            await settle()
            running.withLockedValue { $0 -= 1 }
        }
    }

    /// Returns once none is running, or after `limit`; whether none is.
    func drained(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while count > 0 && ContinuousClock.now < deadline {
            do {
                try await EventLoopClock.sleep(for: .milliseconds(10))
            } catch {
                break // cancelled: stop waiting
            }
        }
        return count == 0
    }
}
