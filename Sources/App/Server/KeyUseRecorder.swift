import Core
import EventLoopClock
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle

/// Remembers when each key was last used, in memory, for `KeyUseFlusher` to write every
/// `interval` in one transaction: `list-keys` shows last use without a database write per request.
public final class KeyUseRecorder: Sendable {
    private let pending = NIOLockedValueBox<[Int64: Int64]>([:])

    public init() {}

    func record(_ keyId: Int64) {
        let now = nowMicros()
        pending.withLockedValue { $0[keyId] = now }
    }

    /// Everything recorded since the last call.
    func take() -> [Int64: Int64] {
        pending.withLockedValue { state in
            defer { state = [:] }
            return state
        }
    }

    /// Puts back what could not be written (a newer time recorded meanwhile wins).
    func restore(_ uses: [Int64: Int64]) {
        pending.withLockedValue { state in
            for (id, micros) in uses where (state[id] ?? .min) < micros { state[id] = micros }
        }
    }
}

/// Writes recorded key use every `interval`, and once more at shutdown.
struct KeyUseFlusher: Service {
    let recorder: KeyUseRecorder
    let store: any Store
    let interval: Duration
    let logger: Logger

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await cancelWhenGracefulShutdown { try await EventLoopClock.sleep(for: interval) }
            await flush()
        }
    }

    func flush() async {
        let uses = recorder.take()
        guard !uses.isEmpty else { return }
        do {
            try await store.recordKeyUse(uses)
        } catch {
            recorder.restore(uses)
            logger.warning("could not record when keys were last used; trying again later", metadata: ["error": "\(error)"])
        }
    }
}
