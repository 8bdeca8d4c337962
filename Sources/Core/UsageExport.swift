/// The ledger's export formats, written byte by byte: exports and archives of tens of millions of
/// rows spend their time here, so a row costs no `String`s, no arrays and no `JSONEncoder`.
///
/// CSV: RFC 4180 with CRLF line ends and a header; a field is quoted when it holds a comma, a quote
/// or a line break, and a text field that a spreadsheet would read as a formula (`=`, `+`, `-`,
/// `@` first, and not an integer) gets a leading `'`. JSON: an array of objects with their keys in
/// sorted order, absent keys for absent values, money as exact decimal strings, durations as
/// milliseconds with three decimals, instants as ISO 8601 in UTC with microseconds.
public enum UsageExportFormat: String, Sendable, CaseIterable {
    case csv, json

    /// What a file of this format starts with (the CSV header, or the JSON array's opening).
    public var opening: [UInt8] {
        switch self {
        case .csv: Array((UsageExport.columns.joined(separator: ",") + "\r\n").utf8)
        case .json: Array("[".utf8)
        }
    }

    /// What a file of this format ends with, after `rows` rows.
    public func closing(rows: Int) -> [UInt8] {
        switch self {
        case .csv: []
        case .json: Array((rows == 0 ? "]\n" : "\n]\n").utf8)
        }
    }
}

/// Appends ledger rows in one of the export formats.
public enum UsageExport {
    /// The columns, in CSV order.
    public static let columns = [
        "request_id", "created_at", "customer_id", "key_id", "endpoint", "dialect", "provider", "model", "http_status",
        "outcome", "prompt_tokens", "completion_tokens", "cached_tokens", "token_source", "cost_usd", "held_usd",
        "price_per_request_usd", "price_per_model_usd", "price_input_per_1m_usd", "price_output_per_1m_usd",
        "price_source", "latency_ms", "ttfb_ms",
    ]

    /// Appends row number `index` (0-based) of a file in `format`.
    public static func append(_ u: UsageRecord, index: Int, format: UsageExportFormat, to out: inout [UInt8]) {
        switch format {
        case .csv: appendCSV(u, to: &out)
        case .json: appendJSON(u, first: index == 0, to: &out)
        }
    }

    // MARK: CSV

    static func appendCSV(_ u: UsageRecord, to out: inout [UInt8]) {
        var field = CSVField(out: out)
        out = []
        field.text(u.requestId)
        field.value { $0.timestamp(u.createdAtMicros) }
        field.value { $0.integer(u.customerId) }
        field.value { if let key = u.keyId { $0.integer(key) } }
        field.text(u.endpoint)
        field.text(u.dialect)
        field.text(u.provider)
        field.text(u.model)
        field.value { $0.integer(Int64(u.httpStatus)) }
        field.text(u.outcome.rawValue)
        field.value { $0.integer(u.promptTokens) }
        field.value { $0.integer(u.completionTokens) }
        field.value { $0.integer(u.cachedTokens) }
        field.text(u.tokenSource.rawValue)
        field.value { $0.money(u.cost) }
        field.value { $0.money(u.held) }
        field.value { $0.money(u.price.perRequest) }
        field.value { $0.money(u.price.perModel) }
        field.value { $0.money(u.price.inputPer1M) }
        field.value { $0.money(u.price.outputPer1M) }
        field.text(u.priceSource.rawValue)
        field.value { $0.millis(u.latencyMicros) }
        field.value { if let ttfb = u.timeToFirstByteMicros { $0.millis(ttfb) } }
        out = field.finish()
    }

    /// Writes one row's fields, each into a scratch buffer first so that it can be checked for
    /// quoting and formula defusing as a whole.
    struct CSVField {
        var out: [UInt8]
        var scratch = Bytes()
        var count = 0

        init(out: [UInt8]) {
            self.out = out
            scratch.bytes.reserveCapacity(64)
        }

        mutating func text(_ text: String) {
            var text = text
            text.withUTF8 { emit($0) }
        }

        mutating func value(_ write: (inout Bytes) -> Void) {
            scratch.bytes.removeAll(keepingCapacity: true)
            write(&scratch)
            scratch.bytes.withUnsafeBufferPointer { emit($0) }
        }

        mutating func finish() -> [UInt8] {
            out.append(13)
            out.append(10)
            return out
        }

        private mutating func emit(_ field: UnsafeBufferPointer<UInt8>) {
            if count > 0 { out.append(UInt8(ascii: ",")) }
            count += 1
            let defuse = field.first.map { [UInt8(ascii: "="), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "@")].contains($0) }
                ?? false && !Self.isInteger(field)
            let quote = field.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 10 || $0 == 13 }
            if quote { out.append(UInt8(ascii: "\"")) }
            if defuse { out.append(UInt8(ascii: "'")) }
            if quote {
                for byte in field {
                    out.append(byte)
                    if byte == UInt8(ascii: "\"") { out.append(byte) }
                }
                out.append(UInt8(ascii: "\""))
            } else {
                out.append(contentsOf: field)
            }
        }

        /// Whether the field is a decimal integer that fits in 64 bits (a negative count is data, not a formula).
        static func isInteger(_ field: UnsafeBufferPointer<UInt8>) -> Bool {
            Int64(String(decoding: field, as: UTF8.self)) != nil
        }
    }

    // MARK: JSON

    static func appendJSON(_ u: UsageRecord, first: Bool, to out: inout [UInt8]) {
        var o = JSONObjectWriter(bytes: Bytes(bytes: out))
        out = [] // the buffer moves into the writer and back, never copied
        o.bytes.ascii(first ? "\n{" : ",\n{")
        // Keys in sorted order, as the earlier JSONEncoder(.sortedKeys) output had them.
        o.key("cached_tokens") { $0.integer(u.cachedTokens) }
        o.key("completion_tokens") { $0.integer(u.completionTokens) }
        o.key("cost_usd") { $0.quoted { $0.money(u.cost) } }
        o.key("created_at") { $0.quoted { $0.timestamp(u.createdAtMicros) } }
        o.key("customer_id") { $0.integer(u.customerId) }
        o.key("dialect") { $0.string(u.dialect) }
        o.key("endpoint") { $0.string(u.endpoint) }
        o.key("held_usd") { $0.quoted { $0.money(u.held) } }
        o.key("http_status") { $0.integer(Int64(u.httpStatus)) }
        if let key = u.keyId { o.key("key_id") { $0.integer(key) } }
        o.key("latency_ms") { $0.quoted { $0.millis(u.latencyMicros) } }
        o.key("model") { $0.string(u.model) }
        o.key("outcome") { $0.string(u.outcome.rawValue) }
        o.key("price_input_per_1m_usd") { $0.quoted { $0.money(u.price.inputPer1M) } }
        o.key("price_output_per_1m_usd") { $0.quoted { $0.money(u.price.outputPer1M) } }
        o.key("price_per_model_usd") { $0.quoted { $0.money(u.price.perModel) } }
        o.key("price_per_request_usd") { $0.quoted { $0.money(u.price.perRequest) } }
        o.key("price_source") { $0.string(u.priceSource.rawValue) }
        o.key("prompt_tokens") { $0.integer(u.promptTokens) }
        o.key("provider") { $0.string(u.provider) }
        o.key("request_id") { $0.string(u.requestId) }
        o.key("token_source") { $0.string(u.tokenSource.rawValue) }
        if let ttfb = u.timeToFirstByteMicros { o.key("ttfb_ms") { $0.quoted { $0.millis(ttfb) } } }
        o.bytes.ascii("}")
        out = o.bytes.bytes
    }

    struct JSONObjectWriter {
        var bytes: Bytes
        var count = 0

        mutating func key(_ name: StaticString, _ value: (inout Bytes) -> Void) {
            if count > 0 { bytes.bytes.append(UInt8(ascii: ",")) }
            count += 1
            bytes.bytes.append(UInt8(ascii: "\""))
            bytes.bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            bytes.bytes.append(UInt8(ascii: "\""))
            bytes.bytes.append(UInt8(ascii: ":"))
            value(&bytes)
        }
    }

    /// A byte buffer with the number and text writers both formats share.
    struct Bytes {
        var bytes: [UInt8] = []

        mutating func ascii(_ text: StaticString) {
            bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        mutating func integer(_ value: Int64) {
            if value < 0 { bytes.append(UInt8(ascii: "-")) }
            digits(value.magnitude, width: 1)
        }

        /// The decimal digits of `value`, zero-padded to at least `width`.
        mutating func digits(_ value: UInt64, width: Int) {
            var buffer: (UInt64, UInt64, UInt64) = (0, 0, 0) // 24 bytes: enough for 20 digits
            withUnsafeMutableBytes(of: &buffer) { raw in
                var end = raw.count, v = value
                repeat {
                    end -= 1
                    raw[end] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                } while v > 0
                while raw.count - end < width {
                    end -= 1
                    raw[end] = UInt8(ascii: "0")
                }
                bytes.append(contentsOf: raw[end...])
            }
        }

        /// `Money.decimalString`: exact, trailing zeros dropped but at least two decimals.
        mutating func money(_ amount: Money) {
            if amount.nanos < 0 { bytes.append(UInt8(ascii: "-")) }
            let magnitude = amount.nanos.magnitude, scale = UInt64(Money.scale)
            digits(magnitude / scale, width: 1)
            bytes.append(UInt8(ascii: "."))
            var fraction = magnitude % scale, places = 9
            while places > 2, fraction % 10 == 0 {
                fraction /= 10
                places -= 1
            }
            digits(fraction, width: places)
        }

        /// Milliseconds with exactly three decimals.
        mutating func millis(_ micros: Int64) {
            if micros < 0 { bytes.append(UInt8(ascii: "-")) }
            let magnitude = micros.magnitude
            digits(magnitude / 1000, width: 1)
            bytes.append(UInt8(ascii: "."))
            digits(magnitude % 1000, width: 3)
        }

        /// `Timestamp.iso8601(micros:)`: `2026-11-27T22:49:57.123456Z`.
        mutating func timestamp(_ micros: Int64) {
            let day = UTCDay(containingMicros: micros)
            let intoDay = UInt64(micros - day.startMicros)
            let seconds = intoDay / 1_000_000
            digits(UInt64(day.year), width: 4)
            bytes.append(UInt8(ascii: "-"))
            digits(UInt64(day.month), width: 2)
            bytes.append(UInt8(ascii: "-"))
            digits(UInt64(day.day), width: 2)
            bytes.append(UInt8(ascii: "T"))
            digits(seconds / 3600, width: 2)
            bytes.append(UInt8(ascii: ":"))
            digits(seconds / 60 % 60, width: 2)
            bytes.append(UInt8(ascii: ":"))
            digits(seconds % 60, width: 2)
            bytes.append(UInt8(ascii: "."))
            digits(intoDay % 1_000_000, width: 6)
            bytes.append(UInt8(ascii: "Z"))
        }

        mutating func quoted(_ write: (inout Bytes) -> Void) {
            bytes.append(UInt8(ascii: "\""))
            write(&self)
            bytes.append(UInt8(ascii: "\""))
        }

        /// A JSON string as `JSONEncoder` writes it (slashes unescaped): `"`, `\` and control
        /// characters escaped, everything else as its UTF-8.
        mutating func string(_ text: String) {
            var text = text
            bytes.append(UInt8(ascii: "\""))
            text.withUTF8 { utf8 in
                for byte in utf8 {
                    switch byte {
                    case UInt8(ascii: "\""): ascii("\\\"")
                    case UInt8(ascii: "\\"): ascii("\\\\")
                    case 0x08: ascii("\\b")
                    case 0x0C: ascii("\\f")
                    case 0x0A: ascii("\\n")
                    case 0x0D: ascii("\\r")
                    case 0x09: ascii("\\t")
                    case 0..<0x20:
                        ascii("\\u00")
                        let hex: [UInt8] = Array("0123456789abcdef".utf8)
                        bytes.append(hex[Int(byte >> 4)])
                        bytes.append(hex[Int(byte & 15)])
                    default: bytes.append(byte)
                    }
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }
}
