import Foundation
import Testing
@testable import Core

struct MoneyTests {
    @Test(arguments: [
        ("100", 100_000_000_000), ("100.0", 100_000_000_000), ("0.001", 1_000_000), ("0.000000001", 1),
        ("0", 0), (".5", 500_000_000), ("7.", 7_000_000_000), ("$2.50", 2_500_000_000), (" 1.25 ", 1_250_000_000),
    ] as [(String, Int64)])
    func parsesDecimalStrings(text: String, nanos: Int64) throws {
        #expect(try Money(parsing: text).nanos == nanos)
    }

    @Test(arguments: ["-1", "-0.01", "abc", "", "1e3", "NaN", "inf", "1.2.3", "0.0000000001", "1,5", "99999999999999"])
    func refusesBadAmounts(text: String) {
        #expect(throws: MoneyParseError.self) { try Money(parsing: text) }
    }

    @Test func tenthDecimalIsRefusedAsTooPrecise() {
        #expect(throws: MoneyParseError.tooPrecise("0.0000000001")) { try Money(parsing: "0.0000000001") }
    }

    @Test func formatsLosslessly() throws {
        #expect(Money(nanos: 100_000_000_000).decimalString == "100.00")
        #expect(Money(nanos: 1_000_000).decimalString == "0.001")
        #expect(Money(nanos: 1).decimalString == "0.000000001")
        #expect(Money(nanos: 1_230_000_000).description == "$1.23")
        #expect(Money(nanos: -5_000_000).description == "-$0.005")
        for text in ["0.000000001", "123.456789012", "0.10", "5.00"] {
            let money = try Money(parsing: text)
            #expect(try Money(parsing: money.decimalString) == money)
        }
    }

    @Test func aMillionNanoDollarChargesSumToExactlyOneTenthOfACent() {
        var total = Money.zero
        let charge = Money(nanos: 1)
        for _ in 0..<1_000_000 { total += charge }
        #expect(total == Money(nanos: 1_000_000))
        #expect(total.decimalString == "0.001")
    }
}

struct PricingTests {
    @Test func costIsFlatFeesPlusTokensRoundedOnce() {
        let price = ModelPrice(perRequest: Money(nanos: 1_000_000), perModel: Money(nanos: 2_000_000),
                               inputPer1M: Money(nanos: 150_000_000), outputPer1M: Money(nanos: 600_000_000))
        // 1000 × $0.15/1M = $0.00015; 500 × $0.60/1M = $0.0003.
        #expect(price.cost(promptTokens: 1000, completionTokens: 500) == Money(nanos: 3_000_000 + 150_000 + 300_000))
        #expect(price.cost(promptTokens: 1, completionTokens: 0) == Money(nanos: 3_000_150))
    }

    @Test func tokenChargesAreRoundedOnceHalfUp() {
        // $0.000000001 per 1M tokens: each part alone is below half a nano-dollar (0.3 + 0.3),
        // rounded separately they would vanish; summed first they are 0.6 → 1.
        let price = ModelPrice(perRequest: .zero, inputPer1M: Money(nanos: 1), outputPer1M: Money(nanos: 1))
        #expect(price.cost(promptTokens: 300_000, completionTokens: 300_000) == Money(nanos: 1))
        #expect(price.cost(promptTokens: 400_000, completionTokens: 0) == .zero)
        #expect(price.cost(promptTokens: 500_000, completionTokens: 0) == Money(nanos: 1))
    }

    @Test func cachedTokensUseTheCachedPrice() {
        let price = ModelPrice(perRequest: .zero, inputPer1M: Money(nanos: 2_000_000_000),
                               outputPer1M: .zero, cachedInputPer1M: Money(nanos: 1_000_000_000))
        #expect(price.cost(promptTokens: 1_000_000, completionTokens: 0, cachedTokens: 500_000)
                == Money(nanos: 1_500_000_000))
    }

    @Test func hugeCountsDoNotOverflow() {
        let price = ModelPrice(perRequest: .zero, inputPer1M: Money(nanos: 1_000_000_000_000), outputPer1M: .zero)
        #expect(price.cost(promptTokens: 100_000_000, completionTokens: 0) == Money(nanos: 100_000_000_000_000))
    }
}

struct APIKeyTests {
    @Test func keysAreLongRandomAndHashable() {
        let a = APIKey.generate(), b = APIKey.generate()
        #expect(a.hasPrefix("sk_"))
        #expect(a.count == 51)
        #expect(a != b)
        #expect(a.dropFirst(3).allSatisfy { $0.isLetter || $0.isNumber })
        #expect(APIKey.hash(a).count == 64)
        #expect(APIKey.hash(a) == APIKey.hash(a))
        #expect(APIKey.displayPrefix(of: a) == String(a.prefix(11)))
        // SHA-256("abc"), the FIPS 180-2 test vector.
        #expect(sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// The same digest whatever holds the bytes: a string, a slice in the middle of one (the key
    /// in an `Authorization` header), one built scalar by scalar, multi-byte UTF-8, nothing.
    /// Digests by Python's hashlib.
    @Test func hashesAreTheBytesDigestWhateverHoldsThem() {
        let long = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
        let longDigest = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        #expect(sha256Hex(long) == longDigest)
        let header = "Bearer  \(long)\t"
        let slice = header.dropFirst(8).dropLast()
        #expect(slice == long[...])
        #expect(sha256Hex(slice) == longDigest)
        #expect(APIKey.hash(slice) == APIKey.hash(long))
        let unicode = "clé 🔑 key"
        #expect(sha256Hex(unicode) == "7134b558551baf0211126bed87901ae606c033f54c0e3e53863e732526f1e948")
        #expect(sha256Hex(unicode.unicodeScalars.reduce(into: "") { $0.unicodeScalars.append($1) }) == sha256Hex(unicode))
        #expect(sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }
}

struct CalendarTests {
    @Test func daysRoundTripThroughMicroseconds() throws {
        let day = try #require(UTCDay(parsing: "2024-02-29"))
        #expect(UTCDay(containingMicros: day.startMicros) == day)
        #expect(UTCDay(containingMicros: day.endMicros - 1) == day)
        #expect(UTCDay(containingMicros: day.endMicros).description == "2024-03-01")
        #expect(UTCDay(containingMicros: 0).description == "1970-01-01")
        #expect(BudgetPeriod(containingMicros: day.startMicros).description == "2024-02")
        #expect(Timestamp.iso8601(micros: 1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z")
    }

    @Test(arguments: ["2023-02-29", "2024-13-01", "2024-1-01", "24-01-01", "2024-01-32", "yesterday", ""])
    func refusesBadDates(text: String) {
        #expect(UTCDay(parsing: text) == nil)
    }
}

struct ConfigurationTests {
    @Test func defaultsNeedNoEnvironment() throws {
        let config = try Configuration(environment: [:])
        #expect(config.database == .sqlite(path: "./data/lmsvr.db"))
        #expect(config.port == 8000)
        #expect(config.ollamaBaseURL == "http://localhost:11434")
        #expect(config.defaultPricePerRequest == Money(nanos: 10_000_000))
        #expect(config.openAIAPIKey == nil)
    }

    @Test func badValuesNameTheVariable() {
        #expect(throws: ConfigurationError.self) { try Configuration(environment: ["PORT": "eighty"]) }
        do {
            _ = try Configuration(environment: ["LOG_LEVEL": "LOUD"])
            Issue.record("accepted a bad LOG_LEVEL")
        } catch {
            #expect(error.variable == "LOG_LEVEL")
        }
        #expect(throws: ConfigurationError.self) { try Configuration(environment: ["DATABASE_URL": "mysql://x"]) }
    }

    @Test func databaseURLsParseAndRedact() throws {
        #expect(try DatabaseLocation(url: "sqlite:////var/lib/lmsvr.db") == .sqlite(path: "/var/lib/lmsvr.db"))
        #expect(try DatabaseLocation(url: "sqlite:///./x.db") == .sqlite(path: "./x.db"))
        let pg = try DatabaseLocation(url: "postgres://app:s3cret@db:5432/lmsvr?sslmode=require")
        #expect(pg.redacted == "postgres://app:***@db:5432/lmsvr?sslmode=require")
        #expect(DatabaseLocation.redact("host=db password=s3cret user=app") == "host=db password=*** user=app")
        #expect(!pg.redacted.contains("s3cret"))
    }

    @Test func dotEnvIsOverriddenByTheEnvironment() {
        let merged = DotEnv.merged(
            dotEnvContents: "# comment\nexport PORT=9000\nHOST='127.0.0.1'\nLOG_LEVEL=debug # trailing\n",
            environment: ["PORT": "9100"])
        #expect(merged["PORT"] == "9100")
        #expect(merged["HOST"] == "127.0.0.1")
        #expect(merged["LOG_LEVEL"] == "debug")
    }

    @Test func emailShapes() {
        #expect(CustomerInput.isPlausibleEmail("john@example.com"))
        #expect(!CustomerInput.isPlausibleEmail("john@localhost"))
        #expect(!CustomerInput.isPlausibleEmail("john example@x.com"))
        #expect(!CustomerInput.isPlausibleEmail("@x.com"))
        #expect(!CustomerInput.isPlausibleEmail("a@b@c.com"))
    }
}

struct DocumentationTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func envExampleAndReadmeListEverySetting() throws {
        let example = try String(contentsOf: Self.root.appendingPathComponent(".env.example"), encoding: .utf8)
        let readme = try String(contentsOf: Self.root.appendingPathComponent("README.md"), encoding: .utf8)
        for (name, value) in Configuration.defaults {
            #expect(example.contains(name), "\(name) is missing from .env.example")
            #expect(readme.contains("`\(name)`"), "\(name) is missing from the README")
            if !value.isEmpty { #expect(example.contains("\(name)=\(value)"), "\(name)'s default differs in .env.example") }
        }
        // Parsing the example as-is gives the defaults.
        let parsed = try Configuration(environment: DotEnv.parse(example))
        #expect(parsed.port == 8000)
    }
}
