@testable import App
import Core
import HTTPTypes
import Testing

/// Which key a request presents: what every client sends, spelled loosely, and what must match
/// nothing. Read as bytes (`Authenticator.presentedKey`), so these pin the edges.
@Suite("The key a request presents")
struct PresentedKeyTests {
    /// Fields built leniently, blanks kept: `HTTPField(name:value:)` would trim them itself (as
    /// NIO's conversion of a request's head does), and the trimming here must be tested too.
    func headers(_ fields: [(String, String)]) -> HTTPFields {
        var headers = HTTPFields()
        for (name, value) in fields { headers.append(HTTPField(name: HTTPField.Name(name)!, lenientValue: Array(value.utf8))) }
        return headers
    }

    func key(_ fields: [(String, String)]) -> String? {
        Authenticator.presentedKey(headers(fields)).map(String.init)
    }

    /// What the gateway looks up: the hash of the slice of the header's value, for a value short
    /// enough to be stored inline and for a real key's length.
    @Test func theSliceHashesAsTheKeyItself() {
        for key in ["sk_a", APIKey.generate()] {
            let slice = Authenticator.presentedKey(headers([("Authorization", "Bearer \(key)")]))
            #expect(slice.map { APIKey.hash($0) } == APIKey.hash(key))
        }
    }

    @Test func bearerInAnyCaseWithBlanksAround() {
        #expect(key([("Authorization", "Bearer sk_a")]) == "sk_a")
        #expect(key([("authorization", "bearer sk_a")]) == "sk_a")
        #expect(key([("Authorization", "BEARER   sk_a \t")]) == "sk_a")
        #expect(key([("Authorization", "Bearer \t sk_é🔑 ")]) == "sk_é🔑")
    }

    @Test func xAPIKeyWhenThereIsNoBearer() {
        #expect(key([("x-api-key", "  sk_b\t")]) == "sk_b")
        #expect(key([("X-API-Key", "sk_b")]) == "sk_b")
        #expect(key([("Authorization", "Basic dXNlcg=="), ("x-api-key", "sk_b")]) == "sk_b")
        #expect(key([("x-api-key", "sk_b"), ("Authorization", "Bearer sk_a")]) == "sk_a")
    }

    @Test func nothingUsableIsNoKey() {
        #expect(key([]) == nil)
        #expect(key([("Authorization", "Bearer")]) == nil)
        #expect(key([("Authorization", "Bearer    \t")]) == nil)
        #expect(key([("Authorization", "Bearersk_a")]) == nil)
        #expect(key([("Authorization", "Token sk_a")]) == nil)
        #expect(key([("x-api-key", " \t ")]) == nil)
    }

    /// Two keys in one request are joined as HTTP joins repeated fields, into one that matches no
    /// key: neither is picked.
    @Test func twoKeysMakeOneThatMatchesNothing() {
        #expect(key([("Authorization", "Bearer sk_a"), ("Authorization", "Bearer sk_b")]) == "sk_a, Bearer sk_b")
        #expect(key([("x-api-key", "sk_a"), ("x-api-key", "sk_b")]) == "sk_a, sk_b")
    }
}
