import Foundation
import JSONKit
import Testing

func parse(_ text: String, _ limits: JSONLimits = .init()) throws -> JSONValue {
    try JSONDocument.parse(text, limits: limits).root
}

func reason(_ text: String, _ limits: JSONLimits = .init()) -> JSONError.Reason? {
    do {
        _ = try JSONDocument.parse(text, limits: limits)
        return nil
    } catch {
        return error.reason
    }
}

// MARK: Tests

@Suite("JSONKit: parsing")
struct JSONDocumentTests {
    @Test func readsEveryKindOfValue() throws {
        let v = try parse(#" {"s":"a\"b\\c\n\u00e9\ud83d\ude00","n":-12,"f":0.25,"e":1e3,"t":true,"x":false,"z":null,"a":[1,[2],{}],"o":{"k":"v"}} "#)
        #expect(v.kind == .object && v.count == 9)
        #expect(v["s"]?.string == "a\"b\\c\né😀")
        #expect(v["n"]?.int64 == -12)
        #expect(v["f"]?.int64 == nil && v["f"]?.double == 0.25)
        #expect(v["e"]?.int64 == 1000)
        #expect(v["t"]?.bool == true && v["x"]?.bool == false && v["z"]?.isNull == true)
        #expect(v["a"]?.elements.map(\.rawText) == ["1", "[2]", "{}"])
        #expect(v["o"]?["k"]?.string == "v")
        #expect(v["missing"] == nil && v["s"]?["k"] == nil && v["n"]?.string == nil)
        #expect(v.members.map(\.key) == ["s", "n", "f", "e", "t", "x", "z", "a", "o"])
    }

    @Test func rawTextIsTheExactBytesOfEachValue() throws {
        let text = #"{"a" : [ 1 , "x\u0041" , { "b" : null } ] , "c":-0.5e-3}"#
        let v = try parse(text)
        #expect(v.rawText == text)
        #expect(v["a"]?.rawText == #"[ 1 , "x\u0041" , { "b" : null } ]"#)
        #expect(v["a"]?.elements.map(\.rawText) == ["1", #""x\u0041""#, #"{ "b" : null }"#])
        #expect(v["c"]?.rawText == "-0.5e-3")
    }

    @Test(arguments: [
        "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        "\"abc", "\"a\tb\"", "\"\\x\"", "\"\\u12\"", "[1 2]", "{} {}", "NaN", "[\"a\",]", "'a'", "{\"a\":1 \"b\":2}",
    ])
    func malformedTextIsRefused(text: String) {
        #expect(reason(text) != nil)
    }

    @Test func invalidUTF8IsRefused() throws {
        for bytes: [UInt8] in [[0x22, 0xC0, 0x80, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xF5, 0x80, 0x80, 0x80, 0x22],
                               [0x22, 0xE2, 0x82, 0x22]] {
            #expect(throws: JSONError.self) { try JSONDocument.parse(bytes) }
        }
        #expect(try JSONDocument.parse([0x22, 0xE2, 0x82, 0xAC, 0x22]).root.string == "€")
    }

    @Test func loneSurrogateEscapesBecomeTheReplacementCharacter() throws {
        #expect(try parse(#""\ud800x""#).string == "\u{FFFD}x")
        #expect(try parse(#""\udc00""#).string == "\u{FFFD}")
    }

    @Test func nestingDeeperThanTheLimitIsRefused() throws {
        let deep = String(repeating: "[", count: 50) + String(repeating: "]", count: 50)
        #expect(reason(deep, JSONLimits(maxDepth: 49)) == .tooDeep(49))
        #expect(try parse(deep, JSONLimits(maxDepth: 50)).count == 1)
        // The parser itself does not recurse: a million brackets fail on the limit, not the stack.
        #expect(reason(String(repeating: "[", count: 1_000_000)) == .tooDeep(128))
    }

    @Test func keysThatCollideIgnoringCaseAreRefusedWhenAsked() throws {
        let limits = JSONLimits.request
        #expect(reason(#"{"model":"llama3","messages":[],"MODEL":"mistral"}"#, limits) == .duplicateKey("MODEL"))
        #expect(reason(#"{"a":1,"a":2}"#, limits) == .duplicateKey("a"))
        #expect(reason(#"{"o":{"x":1,"X":2}}"#, limits) == .duplicateKey("X"))
        // Go folds the Kelvin sign onto k and the long s onto s.
        #expect(reason("{\"keep_alive\":1,\"\u{212A}eep_alive\":2}", limits) == .duplicateKey("\u{212A}eep_alive"))
        #expect(reason(#"{"stream":true,"\u017Ftream":false}"#, limits) == .duplicateKey("ſtream"))
        // Many keys take the sorted path.
        let many = (0..<40).map { "\"k\($0)\":\($0)" }.joined(separator: ",")
        #expect(reason("{\(many),\"K7\":0}", limits) == .duplicateKey("K7"))
        #expect(try parse("{\(many)}", limits).count == 40)
        // Without the check (upstream answers), the last one wins.
        #expect(try parse(#"{"a":1,"a":2}"#)["a"]?.int64 == 2)
    }

    @Test func integersAreExactAndOverflowIsNotAnInteger() throws {
        #expect(try parse("9223372036854775807").int64 == Int64.max)
        #expect(try parse("-9223372036854775808").int64 == Int64.min)
        #expect(try parse("9223372036854775808").int64 == nil)
        #expect(try parse("100.0").int64 == 100)
        #expect(try parse("1e30").int64 == nil)
    }

    @Test func manySmallObjectsCostASmallMultipleOfTheText() throws {
        // The attack of issue 11: ~2 million tiny objects. JSONSerialization grew to GiBs;
        // the tape is 8 bytes per value, key and container end.
        let text = "[" + Array(repeating: #"{"a":1}"#, count: 500_000).joined(separator: ",") + "]"
        let document = try JSONDocument.parse(text)
        #expect(document.root.count == 500_000)
        // 4 entries per object (start, key, value, end) of 8 bytes, against 8 bytes of text.
        #expect(MemoryLayout<UInt64>.stride * 4 * 500_000 <= 4 * text.utf8.count)
    }
}

@Suite("JSONKit: writing")
struct JSONWritingTests {
    @Test func builtValuesSerialiseAsJSONSerializationReadsThem() throws {
        let value: JSON = ["s": .string("a\"b\\c\n\t\u{1}é/"), "i": -5, "d": .double(0.25), "b": true, "z": .null,
                           "a": [1, "x"], "o": ["k": "v"]]
        let object = try #require(try JSONSerialization.jsonObject(with: Data(value.bytes)) as? [String: Any])
        #expect(object["s"] as? String == "a\"b\\c\n\t\u{1}é/")
        #expect(object["i"] as? Int == -5 && object["d"] as? Double == 0.25 && object["b"] as? Bool == true)
        #expect(object["z"] is NSNull && (object["a"] as? [Any])?.count == 2)
        #expect(value.text.hasPrefix(#"{"s":"a\"b\\c\n\t\u0001é/","i":-5,"d":0.25,"b":true,"z":null"#))
    }

    @Test func rawPartsAreCopiedVerbatimAndMembersCanBeReplaced() throws {
        let source = try parse(#"{"model":"x","options":{"temperature":0.10000000000000001,"num_predict":-1},"keep":[1, 2]}"#)
        var out: JSON = .object(source.members.map { JSON.Member($0.key, $0.value.json) })
        out.set("model", "llama3")
        out.set("keep", nil)
        #expect(out.text == #"{"model":"llama3","options":{"temperature":0.10000000000000001,"num_predict":-1}}"#)
    }
}
