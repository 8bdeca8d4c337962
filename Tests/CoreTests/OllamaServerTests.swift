import Core
import Testing

@Suite("OLLAMA_BASE_URL lists")
struct OllamaServerTests {
    @Test func oneOrSeveralServersWithWeights() throws {
        #expect(try OllamaServer.parseList("http://localhost:11434/") == [OllamaServer(url: "http://localhost:11434")])
        #expect(try OllamaServer.parseList(" http://gpu1:11434;weight=2 , https://gpu2:11434 ")
                == [OllamaServer(url: "http://gpu1:11434", weight: 2), OllamaServer(url: "https://gpu2:11434")])
        for bad in ["", " , ", "gpu1:11434", "http://a:1;weight=0", "http://a:1;weight=x", "http://a:1;speed=2",
                    "http://a:1,http://a:1/"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try OllamaServer.parseList(bad) }
        }
        #expect(OllamaServer(url: "https://user:secret@gpu1:11434").displayName == "https://gpu1:11434")
        #expect(OllamaServer(url: "http://gpu1:11434").displayName == "http://gpu1:11434")
    }
}
