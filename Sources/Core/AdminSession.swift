import Crypto

/// The operator dashboard's credential (`ADMIN_TOKEN`) and the session cookie a login sets.
///
/// The cookie is `ISSUED_AT.HMAC-SHA256(ISSUED_AT)` under a key derived from the token: nothing
/// is stored server-side, every replica accepts it, it ends after `lifetimeMicros`, and changing
/// the token ends every session at once. Comparisons are constant-time.
public struct AdminSession: Sendable {
    public static let cookieName = "lmsvr_admin"
    /// Twelve hours: a working day, after which the token is asked for again.
    public static let lifetimeMicros: Int64 = 12 * 3_600 * 1_000_000

    private let tokenDigest: [UInt8]
    private let keyBytes: [UInt8]
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }

    public init(token: String) {
        tokenDigest = Array(SHA256.hash(data: Array(token.utf8)))
        keyBytes = Array(SHA256.hash(data: Array(("lmsvr admin session v1:" + token).utf8)))
    }

    /// Whether `presented` is the token, in time that does not depend on where they differ:
    /// fixed-length digests of both, compared byte by byte without an early exit.
    public func isToken(_ presented: String) -> Bool {
        let digest = Array(SHA256.hash(data: Array(presented.utf8)))
        var difference: UInt8 = 0
        for (a, b) in zip(digest, tokenDigest) { difference |= a ^ b }
        return difference == 0
    }

    /// A cookie value for a session that starts now.
    public func cookieValue(issuedAtMicros: Int64) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: Array(String(issuedAtMicros).utf8), using: key)
        return "\(issuedAtMicros)." + code.map { Self.hex[Int($0 >> 4)] + Self.hex[Int($0 & 15)] }.joined()
    }

    /// Whether a cookie value is one of ours and its session has not ended.
    public func isValid(cookie: String, nowMicros: Int64) -> Bool {
        let parts = cookie.split(separator: ".", omittingEmptySubsequences: false)
        // Digits only (no sign), no leading zero, and never arithmetic that can overflow: the
        // cookie is read before anything about the caller is known.
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 18,
              parts[0].utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let issued = Int64(parts[0]), String(issued) == parts[0],
              issued <= nowMicros, nowMicros - issued <= Self.lifetimeMicros,
              let code = Self.bytes(fromHex: parts[1]), code.count == 32
        else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: Array(parts[0].utf8), using: key)
    }

    private static let hex = "0123456789abcdef".map(String.init)

    private static func bytes(fromHex text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var i = 0
        while i < digits.count {
            guard let high = value(digits[i]), let low = value(digits[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}
