import NIOConcurrencyHelpers
import ServiceLifecycle

/// Notes when a graceful shutdown (SIGTERM, SIGINT) begins, so `Gateway.run` can tell the
/// cancellation that ends an expired grace period from a failure. Listed last in the service
/// group, it is the first to be told and returns at once.
final class ShutdownWitness: Service, Sendable {
    private let began = NIOLockedValueBox(false)

    /// Whether a graceful shutdown has begun.
    var hasBegun: Bool { began.withLockedValue { $0 } }

    func run() async throws {
        try await gracefulShutdown()
        began.withLockedValue { $0 = true }
    }
}
