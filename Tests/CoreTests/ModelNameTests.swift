import Core
import Testing

@Suite("Model names")
struct ModelNameTests {
    @Test(arguments: [
        ("llama3", "llama3"),
        ("llama3:latest", "llama3"),
        ("LLaMA3:Latest", "llama3"),
        ("library/llama3", "llama3"),
        ("registry.ollama.ai/library/llama3:latest", "llama3"),
        ("https://registry.ollama.ai/library/llama3", "llama3"),
        ("  llama3:8b ", "llama3:8b"),
        ("llama3:local", "llama3"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co/bartowski/llama-3.2-1b-instruct-gguf:q4_k_m"),
        ("myuser/mymodel", "myuser/mymodel"),
        ("registry.ollama.ai/myuser/mymodel:v2", "myuser/mymodel:v2"),
        ("localhost:5000/library/llama3", "localhost:5000/library/llama3"),
        ("gpt-oss:20b:cloud", "gpt-oss:20b-cloud"),
        ("gpt-oss:20b-cloud", "gpt-oss:20b-cloud"),
        ("gpt-oss:cloud", "gpt-oss:cloud"),
    ])
    func ollamaReferencesNormaliseAsOllamaResolvesThem(raw: String, expected: String) throws {
        #expect(try ModelName.ollama(raw) == expected)
    }

    @Test(arguments: ["", "  ", "a/b/c/d", "/llama3", "llama3:", "lla ma3", "llama3:local:cloud", "-llama3",
                      "library.x/llama3:tag", "llama3:ta/g", "llama3\u{0}", "lläma3"])
    func invalidOllamaReferencesAreRefused(raw: String) {
        #expect(throws: ModelName.Problem.self) { try ModelName.ollama(raw) }
    }

    @Test func namesAreLengthBoundedBeforeAnythingElse() throws {
        let long = String(repeating: "a", count: ModelName.maxBytes + 1)
        #expect(throws: ModelName.Problem.tooLong) { try ModelName.ollama(long) }
        #expect(throws: ModelName.Problem.tooLong) { try ModelName.checkedProviderName(long) }
        #expect(throws: ModelName.Problem.invalid("gpt 4o")) { try ModelName.checkedProviderName("gpt 4o") }
        #expect(try ModelName.checkedProviderName("ft:gpt-4o-mini:org::abc") == "ft:gpt-4o-mini:org::abc")
    }
}
