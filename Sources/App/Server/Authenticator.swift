import Core
import HTTPTypes
import Hummingbird
import Logging

/// Resolves the API key a request carries to its owner. Deny by default: missing, unknown and
/// revoked keys are refused; a database failure is a 503, never a pass.
struct Authenticator: Sendable {
    let store: any Store
    let logger: Logger
    let cache: LookupCache

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
        return principal
    }

    /// `Authorization: Bearer <key>` first (OpenAI, Ollama and Claude Code clients), then
    /// `x-api-key` (the Anthropic SDK).
    static func presentedKey(_ headers: HTTPFields) -> String? {
        if let authorization = headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                let key = parts[1].trimmingCharacters(in: .whitespaces)
                if !key.isEmpty { return key }
            }
        }
        if let key = headers[.xAPIKey]?.trimmingCharacters(in: .whitespaces), !key.isEmpty {
            return key
        }
        return nil
    }
}

import Foundation
