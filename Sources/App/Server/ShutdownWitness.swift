import NIOConcurrencyHelpers
import ServiceLifecycle

/// Notes when a graceful shutdown (SIGTERM, SIGINT) begins, so `Gateway.run` can tell whether
/// the grace period ran out. Listed last in the service group, it is the first to be told and
/// returns at once.
final class ShutdownWitness: Service, Sendable {
    private let beganAt = NIOLockedValueBox<ContinuousClock.Instant?>(nil)

    /// When the graceful shutdown began; nil before.
    var began: ContinuousClock.Instant? { beganAt.withLockedValue { $0 } }

    func run() async throws {
        // The handler runs the moment shutdown is asked for, before any cancellation that an
        // expired grace period brings, so the instant is noted even when both come at once.
        await withGracefulShutdownHandler {
            try? await gracefulShutdown()
        } onGracefulShutdown: { [beganAt] in
            beganAt.withLockedValue { $0 = $0 ?? .now }
        }
    }
}
