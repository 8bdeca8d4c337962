import Core
import Testing

@Suite("Key scopes and rate buckets")
struct KeyScopeTests {
    @Test func modelGlobs() throws {
        let scope = KeyScope(models: try KeyScope.parseModels("llama3*, GPT-4o-mini,mistral:7b,qwen?"))
        #expect(scope.allows(model: "llama3"))
        #expect(scope.allows(model: "llama3.2:1b"))
        #expect(scope.allows(model: "gpt-4o-mini"))
        #expect(!scope.allows(model: "gpt-4o"))
        #expect(scope.allows(model: "mistral:7b") && !scope.allows(model: "mistral"))
        #expect(scope.allows(model: "qwen3") && !scope.allows(model: "qwen25"))
        // The implied :latest tag: a pattern without a tag allows the model with it.
        #expect(KeyScope(models: ["phi3"]).allows(model: "phi3:latest"))
        // Many stars do not blow up.
        #expect(!KeyScope(models: [String(repeating: "*a", count: 40) + "b"]).allows(model: String(repeating: "a", count: 600)))
        #expect(throws: ScopeError.self) { try KeyScope.parseModels(" , ") }
        #expect(throws: ScopeError.self) { try KeyScope.parseAPIs("ollama,grpc") }
        #expect(try KeyScope.parseAPIs("OpenAI, anthropic") == [.openai, .anthropic])
        #expect(KeyScope(apisText: "ollama,openai", modelsText: nil).apis == [.ollama, .openai])
    }

    @Test func bucketArithmetic() {
        let u = RateBucket.unit
        // Full at N units, drains N per microsecond, empty after a minute, never above capacity.
        #expect(RateBucket.drain(10 * u, elapsed: 0, limit: 10) == 10 * u)
        #expect(RateBucket.drain(10 * u, elapsed: 6_000_000, limit: 10) == 9 * u)
        #expect(RateBucket.drain(10 * u, elapsed: 60_000_000, limit: 10) == 0)
        #expect(RateBucket.drain(1000 * u, elapsed: 1, limit: 10) == 10 * u)
        #expect(RateBucket.drain(5 * u, elapsed: 0, limit: nil) == 0)
        #expect(RateBucket.wait(level: 9 * u, amount: 1, limit: 10) == nil)
        #expect(RateBucket.wait(level: 10 * u, amount: 1, limit: 10) == 6_000_000)
        #expect(RateBucket.wait(level: 0, amount: 11, limit: 10) == -1)
        #expect(RateBucket.wait(level: 0, amount: RateLimits.maximum + 1, limit: RateLimits.maximum) == -1)
        // Give-back: unused tokens, scaled by what is left of the hold's minute; used beyond the bound is taken.
        #expect(RateBucket.giveBack(held: 300, used: 100, heldForMicros: 0) == 200)
        #expect(RateBucket.giveBack(held: 300, used: 100, heldForMicros: 30_000_000) == 100)
        #expect(RateBucket.giveBack(held: 300, used: 100, heldForMicros: 90_000_000) == 0)
        #expect(RateBucket.giveBack(held: 100, used: 150, heldForMicros: 90_000_000) == -50)
        #expect(RateBucket.giveBack(held: 1, used: .max, heldForMicros: 0) == 1 - RateLimits.maximum)
    }
}
