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
    public static func hash(_ key: some StringProtocol) -> String { sha256Hex(key) }

    /// The part of a key that is safe to show in listings.
    public static func displayPrefix(of key: String) -> String {
        String(key.prefix(displayPrefixLength))
    }
}

/// The lowercase hex SHA-256 of a string's UTF-8 bytes.
///
/// On every request (the presented key's hash is what the key cache is keyed by), so it hashes
/// the string's own bytes where they are contiguous and writes the 64 digits straight into the
/// new string: copying the bytes into an array and appending digit `Character`s one by one cost
/// four times the hashing itself (1.5 % of a c=64 profile, the SHA-256 0.3 %).
public func sha256Hex(_ text: some StringProtocol) -> String {
    var hasher = SHA256()
    if text.utf8.withContiguousStorageIfAvailable({ hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }) == nil {
        hasher.update(data: Array(text.utf8))
    }
    let digest = hasher.finalize()
    return String(unsafeUninitializedCapacity: 2 * SHA256.byteCount) { out in
        var i = 0
        for byte in digest {
            out[i] = hexDigit(byte >> 4)
            out[i + 1] = hexDigit(byte & 0x0f)
            i += 2
        }
        return i
    }
}

