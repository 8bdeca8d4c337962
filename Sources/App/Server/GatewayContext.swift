#if canImport(Glibc)
import Glibc
#endif
import Core
import Hummingbird

/// Per-request state: the request id every response and ledger row carries, and who is calling.
public struct GatewayContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// `req_` + 32 hex characters, time first, generated here (never taken from the client).
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

/// Request ids: the time they were made, then random bits, in hex.
enum RequestId {
    /// `req_` and 32 lowercase hex digits: 12 of the wall clock in milliseconds (48 bits, enough
    /// until the year 10889), then 80 random bits from one `getentropy` (one `getrandom(2)`),
    /// written straight into the string.
    ///
    /// Time first, as UUIDv7 does, so ids sort roughly by when they were made (exactly within
    /// one clock, up to the millisecond): the ledger's unique index on `request_id`, and
    /// PostgreSQL's holds key, take each new id at their right edge, in pages already in memory,
    /// instead of at a random leaf of an index that outgrows the cache as the ledger grows
    /// (docs/benchmarks.md, eighth pass). 80 random bits keep ids made in the same millisecond,
    /// on any replica, apart.
    static func generate(atMillis millis: Int64 = nowMicros() / 1000) -> String {
        var random = (UInt64(0), UInt16(0))
        withUnsafeMutableBytes(of: &random) { fillRandom(UnsafeMutableRawBufferPointer(rebasing: $0[0..<10])) }
        let time = UInt64(truncatingIfNeeded: millis) & 0xFFFF_FFFF_FFFF
        return String(unsafeUninitializedCapacity: 36) { buffer in
            for (index, byte) in "req_".utf8.enumerated() { buffer[index] = byte }
            for place in 0..<12 {
                buffer[4 + place] = hexDigit(time >> UInt64(44 - 4 * place))
            }
            withUnsafeBytes(of: &random) { random in
                for index in 0..<10 {
                    let byte = random[index]
                    buffer[16 + 2 * index] = hexDigit(byte >> 4)
                    buffer[17 + 2 * index] = hexDigit(byte)
                }
            }
            return 36
        }
    }

    private static func fillRandom(_ bytes: UnsafeMutableRawBufferPointer) {
        #if canImport(Glibc)
        if getentropy(bytes.baseAddress, bytes.count) == 0 { return }
        #endif
        var generator = SystemRandomNumberGenerator()
        for index in bytes.indices { bytes[index] = generator.next() }
    }
}

extension ContinuousClock.Instant {
    /// Microseconds from this instant until now.
    var microsecondsElapsed: Int64 {
        let d = ContinuousClock.now - self
        return d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
    }
}
