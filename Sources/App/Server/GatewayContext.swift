import Core
import Hummingbird

/// Per-request state: the request id every response and ledger row carries, and who is calling.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `req_` + 32 hex characters, generated here (never taken from the client).
    public var requestId: String
    /// Set by the authentication step.
    public var principal: Principal?
    /// When the request arrived, for latency and time to first byte.
    public var startedAt: ContinuousClock.Instant

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.requestId = RequestId.generate()
        self.principal = nil
        self.startedAt = .now
    }

    /// Bodies are read with the configured limit by the handlers themselves.
    public var maxUploadSize: Int { Int.max }
}

/// Request ids: 128 random bits in hex.
enum RequestId {
    static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64, low = generator.next() as UInt64
        return "req_" + hex(high) + hex(low)
    }

    private static func hex(_ value: UInt64) -> String {
        let s = String(value, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}

extension ContinuousClock.Instant {
    /// Microseconds from this instant until now.
    var microsecondsElapsed: Int64 {
        let d = ContinuousClock.now - self
        return d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
    }
}
