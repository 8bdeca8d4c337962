/// A JSON text parsed once into a compact index over its own bytes.
///
/// The index (a "tape") has one 8-byte entry per value, object key and container end, each
/// pointing into `bytes`; strings and numbers are decoded only when read, and a value that is
/// not changed can be copied out verbatim (`JSON.raw`). So memory stays a small multiple of
/// the text (at most about 5×, for a text of one-digit numbers), whatever its shape, and a
/// document is a plain `Sendable` value.
public struct JSONDocument: Sendable {
    /// The JSON text, exactly as it was given.
    public let bytes: [UInt8]
    let tape: [Entry]

    init(bytes: [UInt8], tape: [Entry]) {
        self.bytes = bytes
        self.tape = tape
    }

    /// The top-level value.
    public var root: JSONValue { JSONValue(document: self, index: 0) }

    /// Parses a JSON text (RFC 8259, UTF-8) within `limits`.
    public static func parse(_ bytes: [UInt8], limits: JSONLimits = .init()) throws(JSONError) -> JSONDocument {
        var parser = JSONParser(limits: limits, byteCount: bytes.count)
        try bytes.withUnsafeBufferPointer { buffer throws(JSONError) in try parser.parse(buffer) }
        return JSONDocument(bytes: bytes, tape: parser.tape)
    }

    /// Parses a JSON text given as a string.
    public static func parse(_ text: String, limits: JSONLimits = .init()) throws(JSONError) -> JSONDocument {
        try parse(Array(text.utf8), limits: limits)
    }
}

/// What a parse accepts.
public struct JSONLimits: Sendable {
    /// The deepest nesting of arrays and objects.
    public var maxDepth: Int
    /// Refuse an object with two keys that are equal ignoring case, the way Go's `encoding/json`
    /// (and so Ollama) matches keys to fields: `{"model":"a","MODEL":"b"}` would be read as
    /// model `b` by Ollama. Exact duplicates are refused too.
    public var rejectsCaseInsensitiveDuplicateKeys: Bool

    public init(maxDepth: Int = 128, rejectsCaseInsensitiveDuplicateKeys: Bool = false) {
        self.maxDepth = maxDepth
        self.rejectsCaseInsensitiveDuplicateKeys = rejectsCaseInsensitiveDuplicateKeys
    }

    /// What a request body from a client must satisfy.
    public static let request = JSONLimits(maxDepth: 128, rejectsCaseInsensitiveDuplicateKeys: true)
}

/// Why a text is not acceptable JSON, with the byte offset where that was found.
public struct JSONError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case empty
        case syntax
        case invalidUTF8
        case tooDeep(Int)
        case tooLarge
        /// Two keys of one object that are equal ignoring case (the later one is named).
        case duplicateKey(String)
    }

    public var reason: Reason
    public var offset: Int

    public init(_ reason: Reason, at offset: Int) {
        self.reason = reason
        self.offset = offset
    }

    public var description: String {
        switch reason {
        case .empty: "empty JSON text"
        case .syntax: "invalid JSON at byte \(offset)"
        case .invalidUTF8: "invalid UTF-8 in a JSON string at byte \(offset)"
        case .tooDeep(let depth): "JSON nested deeper than \(depth) levels"
        case .tooLarge: "JSON text too large"
        case .duplicateKey(let key): "duplicate key '\(key)' (keys are compared ignoring case)"
        }
    }
}

/// One tape entry: kind (4 bits), payload (28 bits), byte offset (32 bits).
///
/// Payload: a number's or string's length in bytes (strings: between the quotes); a container
/// start's index of its end entry; a container end's count of elements or members.
struct Entry: Sendable {
    enum Kind: UInt8 {
        case null, `false`, `true`, number, string, escapedString, arrayStart, objectStart, arrayEnd, objectEnd
    }

    let bits: UInt64

    static let maxPayload = (1 << 28) - 1

    init(_ kind: Kind, payload: Int, offset: Int) {
        bits = UInt64(kind.rawValue) | UInt64(payload) << 4 | UInt64(offset) << 32
    }

    var kind: Kind { Kind(rawValue: UInt8(truncatingIfNeeded: bits & 0xF))! }
    var payload: Int { Int(truncatingIfNeeded: (bits >> 4) & 0xFFF_FFFF) }
    var offset: Int { Int(truncatingIfNeeded: bits >> 32) }
}
