import JSONKit
import Testing

/// The scanner that learns an answer's usage while relaying it: only top-level members count,
/// wherever the chunks split the text.
@Suite("JSON top-level scanner")
struct JSONTopLevelScannerTests {
    /// Feeds `text` in chunks of `size` bytes, through the contiguous (pointer) path.
    func scan(_ text: String, keys: [String], chunk size: Int) -> [String: [UInt8]] {
        var scanner = JSONTopLevelScanner(keys: keys)
        let bytes = Array(text.utf8)
        var start = 0
        while start < bytes.count {
            scanner.feed(bytes[start..<min(bytes.count, start + size)])
            start += size
        }
        return scanner.values
    }

    /// The same bytes one at a time through the generic iterator: the state machine alone.
    func reference(_ text: String, keys: [String]) -> [String: [UInt8]] {
        var scanner = JSONTopLevelScanner(keys: keys)
        scanner.feed(text.utf8.lazy.map { $0 }) // no contiguous storage: every byte through `step`
        return scanner.values
    }

    @Test func onlyTopLevelMembersAreTakenWhateverTheStringsHold() {
        let text = #"""
            {"message":{"content":"\"eval_count\":99, {\"usage\": 1}","eval_count":7},"text":"a\\","eval_count" : 42,
             "usage":{"prompt_tokens":3,"completion_tokens":4},"done":true}
            """#
        let keys = ["eval_count", "usage"]
        for size in [1, 2, 3, 7, 64, 4096] {
            let values = scan(text, keys: keys, chunk: size)
            #expect(values["eval_count"].map { String(decoding: $0, as: UTF8.self) } == " 42", "chunks of \(size)")
            #expect(values["usage"].map { String(decoding: $0, as: UTF8.self) } == #"{"prompt_tokens":3,"completion_tokens":4}"#)
        }
    }

    /// Random documents with strings full of quotes, backslashes and look-alike keys, split at
    /// random places: the pointer path with its fast skip over string text finds exactly what
    /// the byte-at-a-time state machine finds.
    @Test func chunkedFeedingMatchesTheStateMachineByteByByte() {
        var generator = SystemRandomNumberGenerator()
        let pieces = [#"a"#, #"\""#, #"\\"#, #"\\\""#, #"eval_count"#, #"\"eval_count\":"#, "{", "}", "[", "]", ",", ":", " ",
                      "é", #"\u0022"#]
        func string() -> String {
            "\"" + (0..<Int.random(in: 0...12, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined() + "\""
        }
        func value(depth: Int) -> String {
            switch Int.random(in: 0..<(depth > 2 ? 3 : 5), using: &generator) {
            case 0: return string()
            case 1: return String(Int.random(in: 0...1_000_000, using: &generator))
            case 2: return "true"
            case 3: return "{" + (0..<Int.random(in: 0...3, using: &generator)).map { _ in
                        string() + ":" + value(depth: depth + 1) }.joined(separator: ",") + "}"
            default: return "[" + (0..<Int.random(in: 0...3, using: &generator)).map { _ in value(depth: depth + 1) }
                        .joined(separator: ",") + "]"
            }
        }
        let keys = ["eval_count", "usage", "a"]
        for _ in 0..<2_000 {
            let members = (0..<Int.random(in: 1...6, using: &generator)).map { _ -> String in
                let key = Bool.random(using: &generator) ? "\"\(keys.randomElement(using: &generator)!)\"" : string()
                return key + ":" + value(depth: 0)
            }
            let text = "{" + members.joined(separator: ",") + "}"
            let expected = reference(text, keys: keys)
            for size in [1, Int.random(in: 2...9, using: &generator), text.utf8.count] {
                #expect(scan(text, keys: keys, chunk: size) == expected, "\(text) in chunks of \(size)")
            }
        }
    }
}
