@testable import Core
import Testing

/// `ModelName.ollama` answers plain `model[:tag]` names from their bytes; everything else goes
/// through the full parse. The two must agree wherever the fast path answers.
@Suite("Model names: the plain-name path")
struct ModelNameFastPathTests {
    /// A fixed generator, so a failure names a reproducible input.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test(arguments: ["llama3", "llama3:8b", "llama3:latest", "llama3.1:8b-instruct-q4_0", "_x:_y", "gpt-oss:20b",
                      "qwen2.5-coder:1.5b"])
    func commonNamesTakeThePlainPath(raw: String) throws {
        #expect(ModelName.plainOllamaName(raw) != nil)
        #expect(ModelName.plainOllamaName(raw) == (try ModelName.parsedOllamaName(raw)))
    }

    @Test(arguments: ["llama3:cloud", "llama3:local", "gpt-oss:20b-cloud", "LLama3", "library/llama3", " llama3",
                      "llama3:", ":8b", "-x", ".x", "x:-y", "a:b:c", String(repeating: "a", count: 81)])
    func unusualNamesAreLeftToTheFullParse(raw: String) {
        #expect(ModelName.plainOllamaName(raw) == nil)
    }

    @Test func bothPathsAgreeOnManyGeneratedNames() throws {
        let alphabet: [Character] = ["a", "z", "0", "9", "_", "-", ".", ":", "/", "L", " ", "c", "l", "o", "u", "d"]
        var random = SplitMix(state: 42)
        var plain = 0
        for _ in 0..<50_000 {
            let length = Int.random(in: 0...10, using: &random)
            let name = String((0..<length).map { _ in alphabet.randomElement(using: &random)! })
            let parsed = try? ModelName.parsedOllamaName(name)
            if let fast = ModelName.plainOllamaName(name) {
                plain += 1
                #expect(fast == parsed, "\(name)")
            }
            #expect((try? ModelName.ollama(name)) == parsed, "\(name)")
        }
        #expect(plain > 1_000) // the generator does reach the plain path
    }
}
