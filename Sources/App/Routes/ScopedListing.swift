import Core
import Foundation
import NIOCore

/// Model listings cut to what a key may use: a key scoped to some models sees only those in
/// `/api/tags`, `/api/ps`, `/api/models` and `/v1/models`.
enum ScopedListing {
    /// Whether a key may use a model named as Ollama lists it (`llama3.2:latest`, or with a
    /// registry host and namespace), compared in the form the gateway prices.
    static func allows(_ principal: Principal?, ollamaName name: String) -> Bool {
        guard let scope = principal?.scope, scope.models != nil else { return true }
        return scope.allows(model: (try? ModelName.ollama(name)) ?? name) || scope.allows(model: name)
    }

    /// An Ollama listing body (`{"models": [{"name": …}, …]}`) without the models the key may not
    /// use; unchanged when it is not that shape.
    static func filterOllamaListing(_ body: ByteBuffer, for principal: Principal?) -> ByteBuffer {
        guard var object = (try? JSONSerialization.jsonObject(with: Data(body.readableBytesView))) as? [String: Any],
              let models = object["models"] as? [[String: Any]] else { return body }
        object["models"] = models.filter { entry in
            allows(principal, ollamaName: (entry["name"] as? String) ?? (entry["model"] as? String) ?? "")
        }
        return JSONText.encode(object)
    }
}
