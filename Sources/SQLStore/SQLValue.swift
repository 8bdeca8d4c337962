/// A value bound to a statement parameter or read from a result column.
///
/// lmsvr's schema only uses 64-bit integers and text, so that is all a value can be; both
/// drivers bind them natively (no value is ever spliced into SQL text).
public enum SQLValue: Sendable, Hashable {
    case null
    case int(Int64)
    case text(String)

    public static func optional(_ value: Int64?) -> SQLValue { value.map(SQLValue.int) ?? .null }
    public static func optional(_ value: String?) -> SQLValue { value.map(SQLValue.text) ?? .null }
}

/// One result row, read by column position.
public struct SQLRow: Sendable {
    public var values: [SQLValue]

    public init(values: [SQLValue]) { self.values = values }

    public func int(_ index: Int) throws(SQLError) -> Int64 {
        guard let value = try optionalInt(index) else { throw .decoding("column \(index) is NULL") }
        return value
    }

    public func optionalInt(_ index: Int) throws(SQLError) -> Int64? {
        switch values[index] {
        case .null: return nil
        case .int(let v): return v
        case .text(let s):
            // PostgreSQL returns SUM(bigint) as numeric text.
            guard let v = Int64(s) else { throw .decoding("column \(index) is not an integer: \(s)") }
            return v
        }
    }

    public func text(_ index: Int) throws(SQLError) -> String {
        guard let value = optionalText(index) else { throw .decoding("column \(index) is NULL") }
        return value
    }

    public func optionalText(_ index: Int) -> String? {
        switch values[index] {
        case .null: nil
        case .int(let v): String(v)
        case .text(let s): s
        }
    }
}
