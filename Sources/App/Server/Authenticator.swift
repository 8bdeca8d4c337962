import Core
import HTTPTypes
import Hummingbird
import Logging

/// Resolves the API key a request carries to its owner. Deny by default: missing, unknown,
/// revoked and expired keys are refused; a database failure is a 503, never a pass.
struct Authenticator: Sendable {
    let store: any Store
    let logger: Logger
    let cache: LookupCache
    let keyUse: KeyUseRecorder

    func authenticate(_ headers: HTTPFields) async throws(GatewayError) -> Principal {
        guard let key = Self.presentedKey(headers) else { throw .missingKey }
        let hash = APIKey.hash(key)
        var principal = cache.principal(forHash: hash)
        if principal == nil {
            let generation = cache.generation()
            do {
                principal = try await store.principal(forKeyHash: hash)
            } catch {
                throw Billing.storeFailure(error, logger: logger)
            }
            // Unknown keys are not cached: new keys announce nothing.
            if let principal { cache.remember(principal, forHash: hash, generation: generation) }
        }
        guard let principal else { throw .invalidKey }
        guard !principal.revoked else { throw .revokedKey }
        guard !principal.isExpired(atMicros: nowMicros()) else { throw .expiredKey }
        keyUse.record(principal.keyId)
        return principal
    }

    /// `Authorization: Bearer <key>` first (OpenAI, Ollama and Claude Code clients), then
    /// `x-api-key` (the Anthropic SDK). A slice of the header's value: only its hash is kept.
    static func presentedKey(_ headers: HTTPFields) -> Substring? {
        if let authorization = value(of: .authorization, in: headers) {
            // Scanned as bytes: Character-wise splitting, lowercasing and trimming (grapheme
            // breaking, new strings) cost more than the rest of authentication on a cached key.
            let bytes = authorization.utf8
            if let space = bytes.firstIndex(of: UInt8(ascii: " ")),
               bytes[..<space].elementsEqual("bearer".utf8, by: { $0 | 0x20 == $1 }) {
                let key = trimmed(bytes[bytes.index(after: space)...])
                if !key.isEmpty { return key }
            }
        }
        if let value = value(of: .xAPIKey, in: headers) {
            let key = trimmed(value.utf8[...])
            if !key.isEmpty { return key }
        }
        return nil
    }

    /// A field's value. `HTTPFields`' own subscript builds a new string from every field of the
    /// name (a lazy map and `joined`: generic code and an allocation on every request); a name
    /// that comes once, as a key's does, has its value returned as it is. Several are joined as
    /// the subscript joins them (so two keys make one that matches nothing).
    static func value(of name: HTTPField.Name, in headers: HTTPFields) -> String? {
        var found: String?
        for field in headers where field.name == name {
            if found != nil { return headers[name] }
            found = field.value
        }
        return found
    }

    /// Without spaces and tabs at either end (Foundation's character-set trimming costs more
    /// than the rest of authentication on a cached key). Bytes throughout: slicing the string by
    /// its `Character`s would break graphemes to find the end.
    static func trimmed(_ bytes: Substring.UTF8View) -> Substring {
        let blank: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !blank($0) }), let last = bytes.lastIndex(where: { !blank($0) }) else { return "" }
        return Substring(bytes[first...last])
    }
}

import Foundation
