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
        "price_source", "latency_ms", "ttfb_ms", "server",
    ]

    /// Appends row number `index` (0-based) of a file in `format`.
    public static func append(_ u: UsageRecord, index: Int, format: UsageExportFormat, to out: inout [UInt8]) {
        let bound = maximumBytes(of: u)
        let start = out.count
        out.append(contentsOf: repeatElement(0, count: bound))
        let written = out.withUnsafeMutableBufferPointer { write(u, index: index, format: format, to: $0.baseAddress! + start) }
        out.removeLast(bound - written)
    }

    /// The most bytes `write` can make of `u`.
    public static func maximumBytes(of u: UsageRecord) -> Int {
        let text = u.requestId.utf8.count + u.endpoint.utf8.count + u.dialect.utf8.count + u.provider.utf8.count
            + u.model.utf8.count + (u.server?.utf8.count ?? 0)
        // Numbers, keys, enums and punctuation come to under 1 KiB (twice that is the margin); a
        // text byte becomes at most 6 (`\u001f`).
        return 2048 + 6 * text
    }

    /// Writes row number `index` (0-based) of a file in `format` at `destination`, which has room
    /// for `maximumBytes(of: u)`; returns how many bytes it wrote.
    ///
    /// Written through a pointer: a byte costs a store, not an `Array` append with its uniqueness
    /// and capacity checks.
    public static func write(_ u: UsageRecord, index: Int, format: UsageExportFormat,
                             to destination: UnsafeMutablePointer<UInt8>) -> Int {
        var w = ByteWriter(start: destination)
        switch format {
        case .csv: writeCSV(u, to: &w)
        case .json: writeJSON(u, first: index == 0, to: &w)
        }
        return w.count
    }

    // MARK: CSV

    static func writeCSV(_ u: UsageRecord, to w: inout ByteWriter) {
        var row = CSVRow(w: w)
        row.text(u.requestId)
        row.value { $0.timestamp(u.createdAtMicros) }
        row.value { $0.integer(u.customerId) }
        row.value { if let key = u.keyId { $0.integer(key) } }
        row.text(u.endpoint)
        row.text(u.dialect)
        row.text(u.provider)
        row.text(u.model)
        row.value { $0.integer(Int64(u.httpStatus)) }
        row.text(u.outcome.rawValue)
        row.value { $0.integer(u.promptTokens) }
        row.value { $0.integer(u.completionTokens) }
        row.value { $0.integer(u.cachedTokens) }
        row.text(u.tokenSource.rawValue)
        row.value { $0.money(u.cost) }
        row.value { $0.money(u.held) }
        row.value { $0.money(u.price.perRequest) }
        row.value { $0.money(u.price.perModel) }
        row.value { $0.money(u.price.inputPer1M) }
        row.value { $0.money(u.price.outputPer1M) }
        row.text(u.priceSource.rawValue)
        row.value { $0.millis(u.latencyMicros) }
        row.value { if let ttfb = u.timeToFirstByteMicros { $0.millis(ttfb) } }
        row.text(u.server ?? "")
        row.w.byte(13)
        row.w.byte(10)
        w = row.w
    }

    /// Writes one row's fields, each checked as a whole for quoting and formula defusing.
    struct CSVRow {
        var w: ByteWriter
        var count = 0

        mutating func text(_ text: String) {
            separate()
            var text = text
            text.withUTF8 { field in
                let quote = field.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 10 || $0 == 13 }
                if quote { w.byte(UInt8(ascii: "\"")) }
                if Self.needsDefusing(field) { w.byte(UInt8(ascii: "'")) }
                if quote {
                    for byte in field {
                        w.byte(byte)
                        if byte == UInt8(ascii: "\"") { w.byte(byte) }
                    }
                    w.byte(UInt8(ascii: "\""))
                } else {
                    w.bytes(field)
                }
            }
        }

        /// A number, a timestamp or nothing: never quoted (no commas, quotes or line breaks), but
        /// defused like any field (a negative amount reads as a formula).
        mutating func value(_ write: (inout ByteWriter) -> Void) {
            separate()
            let start = w.count
            write(&w)
            let field = UnsafeBufferPointer(start: w.start + start, count: w.count - start)
            if Self.needsDefusing(field) { w.insert(UInt8(ascii: "'"), at: start) }
        }

        private mutating func separate() {
            if count > 0 { w.byte(UInt8(ascii: ",")) }
            count += 1
        }

        /// Whether a spreadsheet would read the field as a formula: `=`, `+`, `-` or `@` first, and
        /// not a decimal integer that fits in 64 bits (a negative count is data, not a formula).
        static func needsDefusing(_ field: UnsafeBufferPointer<UInt8>) -> Bool {
            guard let first = field.first,
                  first == UInt8(ascii: "=") || first == UInt8(ascii: "+") || first == UInt8(ascii: "-") || first == UInt8(ascii: "@")
            else { return false }
            return Int64(String(decoding: field, as: UTF8.self)) == nil
        }
    }

    // MARK: JSON

    static func writeJSON(_ u: UsageRecord, first: Bool, to w: inout ByteWriter) {
        var o = JSONObjectWriter(w: w)
        o.w.ascii(first ? "\n{" : ",\n{")
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
        if let server = u.server { o.key("server") { $0.string(server) } }
        o.key("token_source") { $0.string(u.tokenSource.rawValue) }
        if let ttfb = u.timeToFirstByteMicros { o.key("ttfb_ms") { $0.quoted { $0.millis(ttfb) } } }
        o.w.byte(UInt8(ascii: "}"))
        w = o.w
    }

    struct JSONObjectWriter {
        var w: ByteWriter
        var count = 0

        mutating func key(_ name: StaticString, _ value: (inout ByteWriter) -> Void) {
            if count > 0 { w.byte(UInt8(ascii: ",")) }
            count += 1
            w.byte(UInt8(ascii: "\""))
            w.ascii(name)
            w.byte(UInt8(ascii: "\""))
            w.byte(UInt8(ascii: ":"))
            value(&w)
        }
    }

    /// Writes into memory the caller made room for, with the number and text writers both formats
    /// share.
    struct ByteWriter {
        let start: UnsafeMutablePointer<UInt8>
        var count = 0

        init(start: UnsafeMutablePointer<UInt8>) { self.start = start }

        mutating func byte(_ byte: UInt8) {
            start[count] = byte
            count += 1
        }

        mutating func bytes(_ bytes: UnsafeBufferPointer<UInt8>) {
            guard let base = bytes.baseAddress else { return }
            (start + count).update(from: base, count: bytes.count)
            count += bytes.count
        }

        mutating func ascii(_ text: StaticString) {
            bytes(UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
        }

        /// Moves what was written since `index` one byte on and puts `byte` there.
        mutating func insert(_ byte: UInt8, at index: Int) {
            (start + index + 1).update(from: start + index, count: count - index)
            start[index] = byte
            count += 1
        }

        mutating func integer(_ value: Int64) {
            if value < 0 { byte(UInt8(ascii: "-")) }
            digits(value.magnitude, width: 1)
        }

        /// The decimal digits of `value`, zero-padded to at least `width`.
        mutating func digits(_ value: UInt64, width: Int) {
            var length = 1, rest = value / 10
            while rest > 0 {
                length += 1
                rest /= 10
            }
            length = max(length, width)
            var v = value, at = count + length
            while at > count {
                at -= 1
                start[at] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
            }
            count += length
        }

        /// `Money.decimalString`: exact, trailing zeros dropped but at least two decimals.
        mutating func money(_ amount: Money) {
            if amount.nanos < 0 { byte(UInt8(ascii: "-")) }
            let magnitude = amount.nanos.magnitude, scale = UInt64(Money.scale)
            digits(magnitude / scale, width: 1)
            byte(UInt8(ascii: "."))
            var fraction = magnitude % scale, places = 9
            while places > 2, fraction % 10 == 0 {
                fraction /= 10
                places -= 1
            }
            digits(fraction, width: places)
        }

        /// Milliseconds with exactly three decimals.
        mutating func millis(_ micros: Int64) {
            if micros < 0 { byte(UInt8(ascii: "-")) }
            let magnitude = micros.magnitude
            digits(magnitude / 1000, width: 1)
            byte(UInt8(ascii: "."))
            digits(magnitude % 1000, width: 3)
        }

        /// `Timestamp.iso8601(micros:)`: `2026-11-27T22:49:57.123456Z`.
        mutating func timestamp(_ micros: Int64) {
            let day = UTCDay(containingMicros: micros)
            let intoDay = UInt64(micros - day.startMicros)
            let seconds = intoDay / 1_000_000
            digits(UInt64(day.year), width: 4)
            byte(UInt8(ascii: "-"))
            digits(UInt64(day.month), width: 2)
            byte(UInt8(ascii: "-"))
            digits(UInt64(day.day), width: 2)
            byte(UInt8(ascii: "T"))
            digits(seconds / 3600, width: 2)
            byte(UInt8(ascii: ":"))
            digits(seconds / 60 % 60, width: 2)
            byte(UInt8(ascii: ":"))
            digits(seconds % 60, width: 2)
            byte(UInt8(ascii: "."))
            digits(intoDay % 1_000_000, width: 6)
            byte(UInt8(ascii: "Z"))
        }

        mutating func quoted(_ write: (inout ByteWriter) -> Void) {
            byte(UInt8(ascii: "\""))
            write(&self)
            byte(UInt8(ascii: "\""))
        }

        /// A JSON string as `JSONEncoder` writes it (slashes unescaped): `"`, `\` and control
        /// characters escaped, everything else as its UTF-8.
        mutating func string(_ text: String) {
            var text = text
            byte(UInt8(ascii: "\""))
            text.withUTF8 { utf8 in
                // Most text needs no escape at all: copied whole.
                if !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                    bytes(utf8)
                    return
                }
                for b in utf8 {
                    switch b {
                    case UInt8(ascii: "\""): ascii("\\\"")
                    case UInt8(ascii: "\\"): ascii("\\\\")
                    case 0x08: ascii("\\b")
                    case 0x0C: ascii("\\f")
                    case 0x0A: ascii("\\n")
                    case 0x0D: ascii("\\r")
                    case 0x09: ascii("\\t")
                    case 0..<0x20:
                        ascii("\\u00")
                        byte(hexDigit(b >> 4))
                        byte(hexDigit(b))
                    default: byte(b)
                    }
                }
            }
            byte(UInt8(ascii: "\""))
        }
    }
}
