/// A client request that a translation cannot carry to the upstream: always a 400 in the
/// client's dialect, with the offending parameter when there is one.
public struct TranslationError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var param: String?

    public init(_ message: String, param: String? = nil) {
        self.message = message
        self.param = param
    }

    public var description: String { message }
}

/// A JSON object as JSONSerialization produces and consumes it.
public typealias JSONObject = [String: Any]

/// Small helpers for reading loosely typed JSON.
public enum JSONValue {
    public static func int64(_ value: Any?) -> Int64? {
        if value is Bool { return nil }
        if let v = value as? Int { return Int64(v) }
        if let v = value as? Int64 { return v }
        if let v = value as? Double, v.rounded() == v, abs(v) < 9e18 { return Int64(v) }
        if let n = value as? NSNumber { return n.int64Value }
        return nil
    }

    static func string(_ value: Any?) -> String? { value as? String }

    /// Serialises a value with sorted keys and no escaped slashes.
    static func text(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject([value]),
              let data = try? JSONSerialization.data(withJSONObject: [value], options: [.sortedKeys, .withoutEscapingSlashes])
        else { return "null" }
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String { text(s) }
}

import Foundation
