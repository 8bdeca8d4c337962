/// Picks the values of chosen top-level members out of a JSON object as its text streams past,
/// keeping nothing else: the gateway relays a whole answer to its client chunk by chunk and
/// still learns its `usage` (or Ollama's counts) at the end, in constant memory.
///
/// It follows strings, escapes and nesting, so a key inside a nested object, or text inside a
/// string that looks like a key, is never taken for a top-level member.
public struct JSONTopLevelScanner: Sendable {
    private let wanted: [[UInt8]]
    /// The raw text of each wanted member seen, by key (the last one, should there be several).
    public private(set) var values: [String: [UInt8]] = [:]
    /// Longest value kept; a longer one is dropped (usage blocks are tiny).
    public static let maxValueBytes = 1 << 16

    private var depth = 0
    private var inString = false
    private var escaped = false
    /// At depth 1, the next string is a key.
    private var expectingKey = false
    private var readingKey = false
    private var key: [UInt8] = []
    private var keyOverflow = false
    private var capturing: String?
    private var value: [UInt8] = []

    public init(keys: [String]) {
        wanted = keys.map { Array($0.utf8) }
    }

    /// The value of `key` parsed, if the member was seen.
    public func value(_ key: String) -> JSONValue? {
        values[key].flatMap { try? JSONDocument.parse($0).root }
    }

    public mutating func feed(_ bytes: some Sequence<UInt8>) {
        // Contiguous bytes (a ByteBuffer's view) are walked through a pointer: the generic
        // iterator cost more than the scan itself (~5 % of a request's CPU on an 8 KB answer).
        let walked: Void? = bytes.withContiguousStorageIfAvailable { buffer in
            var i = 0
            while i < buffer.count {
                // Inside a string that is neither a key being read nor part of a value being
                // kept, only a quote or a backslash matters: most of an answer's bytes (its
                // text) are passed over here without the state machine.
                if inString && !escaped && !readingKey && capturing == nil {
                    while i < buffer.count && buffer[i] != UInt8(ascii: "\"") && buffer[i] != UInt8(ascii: "\\") { i += 1 }
                    if i == buffer.count { break }
                }
                step(buffer[i])
                i += 1
            }
        }
        if walked == nil { for b in bytes { step(b) } }
    }

    private mutating func step(_ b: UInt8) {
        if capturing != nil {
            // The value ends at a comma or the closing brace of the top-level object.
            if !inString && depth == 1 && (b == UInt8(ascii: ",") || b == UInt8(ascii: "}")) {
                finishCapture()
            } else if value.count < Self.maxValueBytes {
                value.append(b)
            } else {
                capturing = nil
                value = []
            }
        }
        if inString {
            if readingKey && !escaped && b != UInt8(ascii: "\"") {
                if key.count < 256 { key.append(b) } else { keyOverflow = true }
            }
            if escaped {
                escaped = false
            } else if b == UInt8(ascii: "\\") {
                escaped = true
            } else if b == UInt8(ascii: "\"") {
                inString = false
            }
            return
        }
        switch b {
        case UInt8(ascii: "\""):
            inString = true
            if depth == 1 && expectingKey {
                readingKey = true
                expectingKey = false
                key.removeAll(keepingCapacity: true) // one buffer for every key of the object
                keyOverflow = false
            }
        case UInt8(ascii: ":") where depth == 1 && readingKey:
            readingKey = false
            if !keyOverflow, wanted.contains(key) {
                capturing = String(decoding: key, as: UTF8.self)
                value = []
            }
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            depth += 1
            if depth == 1 { expectingKey = b == UInt8(ascii: "{") }
        case UInt8(ascii: "}"), UInt8(ascii: "]"):
            depth -= 1
        case UInt8(ascii: ",") where depth == 1:
            expectingKey = true
        default:
            break
        }
    }

    private mutating func finishCapture() {
        if let name = capturing { values[name] = value }
        capturing = nil
        value = []
    }
}
