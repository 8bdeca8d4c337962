/// An exact amount of US dollars, held as integer nano-dollars (10⁻⁹ USD).
///
/// Money never passes through `Double`: it is parsed from and printed as decimal strings, and all
/// arithmetic is on integers. Arithmetic overflow traps, which is the right failure for a ledger.
public struct Money: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// Nano-dollars per dollar.
    public static let scale: Int64 = 1_000_000_000
    /// The most decimal places a decimal string may carry.
    public static let maxFractionDigits = 9

    public var nanos: Int64

    public init(nanos: Int64) { self.nanos = nanos }

    public static let zero = Money(nanos: 0)

    public static func < (lhs: Money, rhs: Money) -> Bool { lhs.nanos < rhs.nanos }
    public static func + (lhs: Money, rhs: Money) -> Money { Money(nanos: lhs.nanos + rhs.nanos) }
    public static func - (lhs: Money, rhs: Money) -> Money { Money(nanos: lhs.nanos - rhs.nanos) }
    public static func += (lhs: inout Money, rhs: Money) { lhs.nanos += rhs.nanos }

    /// Parses a non-negative decimal dollar amount such as `100`, `100.0`, `0.001` or
    /// `0.000000001`. Refuses signs, exponents, NaN, more than nine decimals and overflow.
    public init(parsing text: String) throws(MoneyParseError) {
        var s = Substring(text.trimmingWhitespace())
        if s.hasPrefix("$") { s = s.dropFirst() }
        guard !s.isEmpty else { throw .notANumber(text) }
        if s.hasPrefix("-") { throw .negative(text) }
        let parts = s.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = parts[0]
        let fraction = parts.count > 1 ? parts[1] : ""
        guard !(whole.isEmpty && fraction.isEmpty),
              whole.allSatisfy(\.isASCIIDigit), fraction.allSatisfy(\.isASCIIDigit)
        else { throw .notANumber(text) }
        guard fraction.count <= Money.maxFractionDigits else { throw .tooPrecise(text) }
        let wholeValue: Int64
        if whole.isEmpty {
            wholeValue = 0
        } else {
            guard let value = Int64(whole) else { throw .tooLarge(text) }
            wholeValue = value
        }
        let padded = fraction + String(repeating: "0", count: Money.maxFractionDigits - fraction.count)
        let fractionValue = Int64(padded) ?? 0
        let (scaled, overflow1) = wholeValue.multipliedReportingOverflow(by: Money.scale)
        let (total, overflow2) = scaled.addingReportingOverflow(fractionValue)
        guard !overflow1, !overflow2 else { throw .tooLarge(text) }
        self.nanos = total
    }

    /// The exact decimal value with all nine places, e.g. `"0.001000000"`.
    public var exactDecimal: String {
        let sign = nanos < 0 ? "-" : ""
        let magnitude = nanos.magnitude
        let whole = magnitude / UInt64(Money.scale)
        let fraction = String(magnitude % UInt64(Money.scale))
        return "\(sign)\(whole).\(String(repeating: "0", count: 9 - fraction.count))\(fraction)"
    }

    /// The exact value with trailing zeros removed but at least two decimals: `100.00`, `0.001`,
    /// `0.000000001`. Lossless, so it is also what JSON output carries.
    public var decimalString: String {
        var text = exactDecimal
        while text.hasSuffix("0"), let dot = text.firstIndex(of: "."), text.distance(from: dot, to: text.endIndex) > 3 {
            text.removeLast()
        }
        return text
    }

    /// `$100.00`, for people.
    public var description: String {
        nanos < 0 ? "-$" + Money(nanos: -nanos).decimalString : "$" + decimalString
    }
}

/// Why a decimal string is not an amount of money.
public enum MoneyParseError: Error, Equatable, CustomStringConvertible {
    case notANumber(String)
    case negative(String)
    case tooPrecise(String)
    case tooLarge(String)

    public var description: String {
        switch self {
        case .notANumber(let s): "'\(s)' is not a decimal amount (expected e.g. 100 or 0.001)"
        case .negative(let s): "'\(s)' is negative; amounts must be zero or more"
        case .tooPrecise(let s): "'\(s)' has more than 9 decimal places (the smallest unit is $0.000000001)"
        case .tooLarge(let s): "'\(s)' is too large"
        }
    }
}

extension Character {
    var isASCIIDigit: Bool { self >= "0" && self <= "9" }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
