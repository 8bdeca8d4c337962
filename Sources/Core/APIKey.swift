import Crypto

/// Generation and hashing of customer API keys.
///
/// A key is `sk_` followed by 48 characters drawn uniformly from [A-Za-z0-9] with the system's
/// cryptographic generator (`getrandom` on Linux): about 285 bits. Only its SHA-256 and a short
/// display prefix are stored.
public enum APIKey {
    public static let prefix = "sk_"
    public static let randomLength = 48
    /// How many leading characters of a key are kept for display (`sk_` plus 8).
    public static let displayPrefixLength = 11

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

    /// A new random key.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        var key = prefix
        key.reserveCapacity(prefix.count + randomLength)
        for _ in 0..<randomLength {
            // `random(in:using:)` rejects out-of-range draws, so the choice is unbiased.
            key.append(alphabet[Int.random(in: 0..<alphabet.count, using: &generator)])
        }
        return key
    }

    /// The lowercase hex SHA-256 of a key, which is what the database stores and looks up.
    public static func hash(_ key: String) -> String { sha256Hex(key) }

    /// The part of a key that is safe to show in listings.
    public static func displayPrefix(of key: String) -> String {
        String(key.prefix(displayPrefixLength))
    }
}

/// The lowercase hex SHA-256 of a string's UTF-8 bytes.
public func sha256Hex(_ text: String) -> String {
    let digest = SHA256.hash(data: Array(text.utf8))
    let hexDigits = Array("0123456789abcdef")
    var hex = ""
    hex.reserveCapacity(64)
    for byte in digest {
        hex.append(hexDigits[Int(byte >> 4)])
        hex.append(hexDigits[Int(byte & 0x0f)])
    }
    return hex
}
