import Core
import Foundation
import Testing

/// The export encoder writes bytes by hand for speed; these check it against Foundation's
/// `JSONEncoder` (the JSON format) and against an RFC 4180 reading (the CSV format).
@Suite("Usage export formats")
struct UsageExportTests {
    /// What `JSONEncoder(.sortedKeys, .withoutEscapingSlashes)` makes of a row: the reference.
    struct Reference: Encodable {
        var request_id, created_at, endpoint, dialect, provider, model, outcome, token_source, price_source: String
        var customer_id: Int64
        var key_id: Int64?
        var http_status: Int
        var prompt_tokens, completion_tokens, cached_tokens: Int64
        var cost_usd, held_usd, price_per_request_usd, price_per_model_usd, price_input_per_1m_usd,
            price_output_per_1m_usd, latency_ms: String
        var ttfb_ms: String?
        var server: String?

        init(_ u: UsageRecord) {
            request_id = u.requestId
            created_at = Timestamp.iso8601(micros: u.createdAtMicros)
            customer_id = u.customerId
            key_id = u.keyId
            endpoint = u.endpoint
            dialect = u.dialect
            provider = u.provider
            model = u.model
            http_status = u.httpStatus
            outcome = u.outcome.rawValue
            prompt_tokens = u.promptTokens
            completion_tokens = u.completionTokens
            cached_tokens = u.cachedTokens
            token_source = u.tokenSource.rawValue
            cost_usd = u.cost.decimalString
            held_usd = u.held.decimalString
            price_per_request_usd = u.price.perRequest.decimalString
            price_per_model_usd = u.price.perModel.decimalString
            price_input_per_1m_usd = u.price.inputPer1M.decimalString
            price_output_per_1m_usd = u.price.outputPer1M.decimalString
            price_source = u.priceSource.rawValue
            latency_ms = Self.millis(u.latencyMicros)
            ttfb_ms = u.timeToFirstByteMicros.map(Self.millis)
            server = u.server
        }

        static func millis(_ micros: Int64) -> String {
            let frac = String(micros % 1000)
            return "\(micros / 1000).\(String(repeating: "0", count: 3 - frac.count))\(frac)"
        }

        var csvFields: [String] {
            [request_id, created_at, String(customer_id), key_id.map(String.init) ?? "", endpoint, dialect, provider, model,
             String(http_status), outcome, String(prompt_tokens), String(completion_tokens), String(cached_tokens),
             token_source, cost_usd, held_usd, price_per_request_usd, price_per_model_usd, price_input_per_1m_usd,
             price_output_per_1m_usd, price_source, latency_ms, ttfb_ms ?? "", server ?? ""]
        }
    }

    static func record(id: String, model: String = "llama3", endpoint: String = "/api/chat", keyId: Int64? = 7,
                       cost: Int64 = 96_000, ttfb: Int64? = 1_234, at micros: Int64 = 1_790_812_800_123_456,
                       tokens: Int64 = 26, server: String? = "http://gpu1:11434") -> UsageRecord {
        UsageRecord(requestId: id, customerId: 42, keyId: keyId, endpoint: endpoint, dialect: "ollama", provider: "ollama",
                    model: model, httpStatus: 200, outcome: .ok, promptTokens: tokens, completionTokens: 64, cachedTokens: 3,
                    tokenSource: .provider, cost: Money(nanos: cost),
                    price: ModelPrice(perRequest: Money(nanos: 1), perModel: Money(nanos: 1_000_000_000),
                                      inputPer1M: Money(nanos: 150_000_000), outputPer1M: Money(nanos: 600_000_000),
                                      cachedInputPer1M: nil),
                    priceSource: .configured, held: Money(nanos: 200_000_000_000), latencyMicros: 5_000_007,
                    timeToFirstByteMicros: ttfb, createdAtMicros: micros, server: server)
    }

    static let records: [UsageRecord] = [
        record(id: "req-1"),
        record(id: "no-key-no-ttfb-no-server", keyId: nil, ttfb: nil, server: nil),
        record(id: "server-with-comma", server: "http://a,b:11434/\"x\""),
        record(id: "quote\"back\\slash/slash", model: "hf.co/org/Model:Q4_K_M"),
        record(id: "controls\u{0}\u{1}\u{8}\u{9}\u{a}\u{c}\u{d}\u{1f}\u{7f}", model: "ünïcödé 🦙 \u{2028}"),
        record(id: "=cmd|' /C calc'!A0", model: "+1", endpoint: "-2,3", cost: 0),
        record(id: "@SUM(1)", model: "-42", cost: 1, at: 0, tokens: -5),
        record(id: "epoch-before", cost: Int64.max, ttfb: 0, at: -1, tokens: Int64.max),
        record(id: "year-9999", at: 253_402_300_799_999_999),
    ]

    @Test func jsonIsWhatJSONEncoderWrites() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var expected = "["
        var actual: [UInt8] = UsageExportFormat.json.opening
        for (index, record) in Self.records.enumerated() {
            expected += (index == 0 ? "\n" : ",\n") + String(decoding: try encoder.encode(Reference(record)), as: UTF8.self)
            UsageExport.append(record, index: index, format: .json, to: &actual)
        }
        expected += "\n]\n"
        actual += UsageExportFormat.json.closing(rows: Self.records.count)
        #expect(String(decoding: actual, as: UTF8.self) == expected)
        #expect(try JSONSerialization.jsonObject(with: Data(actual)) is [Any])
        #expect(UsageExportFormat.json.opening + UsageExportFormat.json.closing(rows: 0) == Array("[]\n".utf8))
    }

    @Test func csvReadsBackFieldForFieldWithFormulasDefused() throws {
        var bytes: [UInt8] = UsageExportFormat.csv.opening
        for (index, record) in Self.records.enumerated() { UsageExport.append(record, index: index, format: .csv, to: &bytes) }
        let rows = Self.readCSV(String(decoding: bytes, as: UTF8.self))
        #expect(rows.count == Self.records.count + 1)
        #expect(rows[0] == UsageExport.columns)
        for (record, row) in zip(Self.records, rows.dropFirst()) {
            let expected = Reference(record).csvFields.map { field in
                guard let first = field.unicodeScalars.first, "=+-@".unicodeScalars.contains(first), Int64(field) == nil else {
                    return field
                }
                return "'" + field
            }
            #expect(row == expected)
        }
        #expect(rows[6][0] == "'=cmd|' /C calc'!A0" && rows[6][6] == "ollama" && rows[6][7] == "+1")
        #expect(rows[7][10] == "-5", "a negative count is a number, not a formula")
    }

    /// RFC 4180: CRLF between records, fields quoted with doubled quotes inside.
    static func readCSV(_ text: String) -> [[String]] {
        var rows: [[String]] = [], row: [String] = [], field = "", quoted = false
        var scalars = Array(text.unicodeScalars)[...]
        while let c = scalars.popFirst() {
            if quoted {
                if c == "\"" {
                    if scalars.first == "\"" { field.unicodeScalars.append(scalars.removeFirst()) } else { quoted = false }
                } else {
                    field.unicodeScalars.append(c)
                }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                row.append(field)
                field = ""
            } else if c == "\r", scalars.first == "\n" {
                scalars.removeFirst()
                row.append(field)
                rows.append(row)
                row = []
                field = ""
            } else {
                field.unicodeScalars.append(c)
            }
        }
        return rows
    }
}
