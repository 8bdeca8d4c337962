/// A JSON value the gateway builds (a forwarded request, a translated answer), serialised with
/// `bytes`. Object members keep their order. Parts taken from a parsed document unchanged are
/// `.raw`, and are written out byte for byte.
public indirect enum JSON: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSON])
    case object([Member])
    /// A value from a parsed document, copied verbatim.
    case raw(JSONValue)

    public struct Member: Sendable {
        public var key: String
        public var value: JSON

        public init(_ key: String, _ value: JSON) {
            self.key = key
            self.value = value
        }
    }

    /// The serialised text.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        write(into: &out)
        return out
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    public func write(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .int(let n): out.append(contentsOf: String(n).utf8)
        case .double(let d):
            if d.isFinite {
                out.append(contentsOf: (d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)).utf8)
            } else {
                out.append(contentsOf: "null".utf8)
            }
        case .string(let s): JSONText.appendQuoted(s, to: &out)
        case .array(let elements):
            out.append(UInt8(ascii: "["))
            for (i, element) in elements.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                element.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, member) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONText.appendQuoted(member.key, to: &out)
                out.append(UInt8(ascii: ":"))
                member.value.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .raw(let value): out.append(contentsOf: value.rawBytes)
        }
    }

    /// A JSON string literal for `text`.
    public static func quoted(_ text: String) -> String {
        var out: [UInt8] = []
        JSONText.appendQuoted(text, to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// The members of an object (empty for anything else).
    public var members: [Member] {
        if case .object(let members) = self { return members }
        return []
    }

    /// An object's member value by key (the last one).
    public subscript(key: String) -> JSON? {
        members.last { $0.key == key }?.value
    }

    /// Sets (replacing every member of that name, in the first one's place) or, with `nil`,
    /// removes a member of an object.
    public mutating func set(_ key: String, _ value: JSON?) {
        guard case .object(var members) = self else { return }
        let index = members.firstIndex { $0.key == key }
        members.removeAll { $0.key == key }
        if let value { members.insert(Member(key, value), at: index ?? members.count) }
        self = .object(members)
    }
}

// Not ExpressibleByNilLiteral: `nil` where a `JSON?` is expected must stay "absent", never
// become a JSON null.
extension JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral,
                ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JSON...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSON)...) { self = .object(elements.map { Member($0.0, $0.1) }) }
}

extension JSONValue {
    /// This value, to be written out verbatim.
    public var json: JSON { .raw(self) }
}
