/// One value inside a `JSONDocument`: read it, walk into it, or copy it out verbatim.
///
/// Reading never fails: asking a string for its `int64` answers `nil`, asking an array for a
/// key answers `nil`.
public struct JSONValue: Sendable {
    public let document: JSONDocument
    let index: Int

    init(document: JSONDocument, index: Int) {
        self.document = document
        self.index = index
    }

    public enum Kind: Sendable, Equatable { case null, bool, number, string, array, object }

    var entry: Entry { document.tape[index] }

    public var kind: Kind {
        switch entry.kind {
        case .null: .null
        case .false, .true: .bool
        case .number: .number
        case .string, .escapedString: .string
        case .arrayStart, .arrayEnd: .array
        case .objectStart, .objectEnd: .object
        }
    }

    public var isNull: Bool { entry.kind == .null }

    public var bool: Bool? {
        switch entry.kind {
        case .true: true
        case .false: false
        default: nil
        }
    }

    /// The decoded string, for a string value.
    public var string: String? {
        let entry = self.entry
        guard entry.kind == .string || entry.kind == .escapedString else { return nil }
        return document.bytes.withUnsafeBufferPointer { JSONText.decodeString(entry, $0) }
    }

    /// Whether this is a string equal to `text`, without decoding it when it has no escapes.
    public func isString(_ text: String) -> Bool {
        let entry = self.entry
        switch entry.kind {
        case .string:
            let start = entry.offset + 1
            return document.bytes[start..<(start + entry.payload)].elementsEqual(text.utf8)
        case .escapedString: return string == text
        default: return false
        }
    }

    /// The number's literal text, for a number value.
    public var numberText: Substring? {
        guard entry.kind == .number else { return nil }
        return Substring(decoding: rawBytes, as: UTF8.self)
    }

    /// The number as an exact integer: `12`, `-3`, and integral forms like `1e3` or `100.0`;
    /// `nil` for fractions, values out of `Int64`'s range and non-numbers.
    public var int64: Int64? {
        guard entry.kind == .number else { return nil }
        let raw = rawBytes
        var value: Int64 = 0
        var negative = false
        var plain = true
        for (k, b) in raw.enumerated() {
            if k == 0 && b == UInt8(ascii: "-") {
                negative = true
                continue
            }
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else {
                plain = false
                break
            }
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = negative ? times.subtractingReportingOverflow(Int64(b - UInt8(ascii: "0")))
                                      : times.addingReportingOverflow(Int64(b - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            value = next
        }
        if plain { return value }
        guard let double, double.rounded(.towardZero) == double, abs(double) < 9.2e18 else { return nil }
        return Int64(double)
    }

    /// The number as a `Double` (the nearest one).
    public var double: Double? {
        guard let text = numberText else { return nil }
        return Double(text)
    }

    // MARK: Containers

    /// Elements of an array or members of an object; 0 for anything else.
    public var count: Int {
        let entry = self.entry
        guard entry.kind == .arrayStart || entry.kind == .objectStart else { return 0 }
        return document.tape[entry.payload].payload
    }

    /// The value of the member named exactly `key` (the last one, should there be several).
    public subscript(key: String) -> JSONValue? {
        guard entry.kind == .objectStart else { return nil }
        var found: JSONValue?
        forEachMember { name, value in
            if name.isString(key) { found = value }
        }
        return found
    }

    /// The value of the member whose key equals `name` ignoring case, as Go's `encoding/json`
    /// fills a struct field (the last one, should there be several).
    public func field(_ name: String) -> JSONValue? {
        guard entry.kind == .objectStart else { return nil }
        let folded = Array(name.uppercased().lowercased().utf8)
        var found: JSONValue?
        document.bytes.withUnsafeBufferPointer { p in
            forEachMember { key, value in
                if JSONText.foldedKey(key.entry, p) == folded { found = value }
            }
        }
        return found
    }

    /// The members of an object, in order (empty for anything else).
    public var members: [(key: String, value: JSONValue)] {
        var out: [(key: String, value: JSONValue)] = []
        out.reserveCapacity(count)
        forEachMember { name, value in out.append((name.string ?? "", value)) }
        return out
    }

    /// Calls `body` with each member's key (a string value) and value, without decoding keys.
    public func forEachMember(_ body: (JSONValue, JSONValue) throws -> Void) rethrows {
        let entry = self.entry
        guard entry.kind == .objectStart else { return }
        var j = index + 1
        while j < entry.payload {
            try body(JSONValue(document: document, index: j), JSONValue(document: document, index: j + 1))
            j = next(after: j + 1)
        }
    }

    /// The elements of an array (empty for anything else).
    public var elements: JSONElements { JSONElements(array: self) }

    /// The index of the entry after the value at `i` (past a container's end).
    func next(after i: Int) -> Int {
        let entry = document.tape[i]
        return entry.kind == .arrayStart || entry.kind == .objectStart ? entry.payload + 1 : i + 1
    }

    // MARK: Text

    /// The exact bytes of this value in the document.
    public var rawBytes: ArraySlice<UInt8> {
        let entry = self.entry
        let end: Int = switch entry.kind {
        case .null, .true: entry.offset + 4
        case .false: entry.offset + 5
        case .number: entry.offset + entry.payload
        case .string, .escapedString: entry.offset + entry.payload + 2
        case .arrayStart, .objectStart: document.tape[entry.payload].offset + 1
        case .arrayEnd, .objectEnd: entry.offset + 1
        }
        return document.bytes[entry.offset..<end]
    }

    /// The exact text of this value in the document.
    public var rawText: String { String(decoding: rawBytes, as: UTF8.self) }
}

/// The elements of a JSON array, in order (none for anything else, `nil` included).
public struct JSONElements: Sequence, Sendable {
    let array: JSONValue?

    public func makeIterator() -> Iterator {
        guard let array, array.entry.kind == .arrayStart else { return Iterator(array: nil, position: 0, end: 0) }
        return Iterator(array: array, position: array.index + 1, end: array.entry.payload)
    }

    public struct Iterator: IteratorProtocol {
        let array: JSONValue?
        var position: Int
        let end: Int

        public mutating func next() -> JSONValue? {
            guard let array, position < end else { return nil }
            defer { position = array.next(after: position) }
            return JSONValue(document: array.document, index: position)
        }
    }
}

extension Optional where Wrapped == JSONValue {
    /// The elements of an array that may be missing: none when it is.
    public var elements: JSONElements { JSONElements(array: self) }
}
