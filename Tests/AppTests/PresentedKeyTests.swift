@testable import App
import HTTPTypes
import Testing

/// Which key a request presents: what every client sends, spelled loosely, and what must match
/// nothing. Read as bytes (`Authenticator.presentedKey`), so these pin the edges.
@Suite("The key a request presents")
struct PresentedKeyTests {
    func key(_ fields: [(String, String)]) -> String? {
        var headers = HTTPFields()
        for (name, value) in fields { headers.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        return Authenticator.presentedKey(headers).map(String.init)
    }

    @Test func bearerInAnyCaseWithBlanksAround() {
        #expect(key([("Authorization", "Bearer sk_a")]) == "sk_a")
        #expect(key([("authorization", "bearer sk_a")]) == "sk_a")
        #expect(key([("Authorization", "BEARER   sk_a \t")]) == "sk_a")
        #expect(key([("Authorization", "Bearer \t sk_é🔑 ")]) == "sk_é🔑")
    }

    @Test func xAPIKeyWhenThereIsNoBearer() {
        #expect(key([("x-api-key", "  sk_b\t")]) == "sk_b")
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
