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
        #expect(OllamaServer.authority(of: "http://u:p@gpu1:11434/secret?k=v") == "u:p@gpu1:11434")
        #expect(OllamaServer.authority(of: "http://[::1]:11434") == "[::1]:11434")
        #expect(OllamaServer.authority(of: "gpu1") == "")
    }

    /// A name never shows credentials or a path (a reverse proxy's secret may be in either), and
    /// two servers can never share one.
    @Test func namesHideCredentialsAndPaths() throws {
        #expect(OllamaServer(url: "https://u:p@ss@proxy.example/TOKEN123/ollama?k=v").displayName == "https://proxy.example")
        #expect(OllamaServer(url: "http://h:8080/x@v2").displayName == "http://h:8080")
        let named = try OllamaServer.parseList("https://proxy/SECRET1;name=gpu-1;weight=2,https://proxy/SECRET2;NAME=gpu_2.b")
        #expect(named.map(\.displayName) == ["gpu-1", "gpu_2.b"] && named.map(\.weight) == [2, 1])
        for bad in ["https://proxy/SECRET1,https://proxy/SECRET2", "http://a:1;name=x,http://b:1;name=x",
                    "http://a:1;name=", "http://a:1;name=has space", "http://a:1;name=" + String(repeating: "x", count: 65),
                    "http://a:1;name=a/b"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try OllamaServer.parseList(bad) }
        }
        do {
            _ = try OllamaServer.parseList("https://user:pw@proxy/SECRET;weight=0")
        } catch {
            #expect(!error.description.contains("SECRET") && !error.description.contains("pw"))
        }
    }
}
