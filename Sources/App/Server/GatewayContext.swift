#if canImport(Glibc)
import Glibc
#endif
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
    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// `req_` and 32 lowercase hex digits: the 128 bits come from one `getentropy` (one
    /// `getrandom(2)`; the system generator asks the kernel once per 64 bits) and are written
    /// straight into the string.
    static func generate() -> String {
        var bits = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &bits) { fillRandom($0) }
        return String(unsafeUninitializedCapacity: 36) { buffer in
            for (index, byte) in "req_".utf8.enumerated() { buffer[index] = byte }
            withUnsafeBytes(of: &bits) { random in
                for (index, byte) in random.enumerated() {
                    buffer[4 + 2 * index] = hexDigits[Int(byte >> 4)]
                    buffer[5 + 2 * index] = hexDigits[Int(byte & 0x0f)]
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
