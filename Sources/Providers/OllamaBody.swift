import Core
import JSONKit

/// A request body bound for Ollama, before the gateway adds what it decides: the output bound
/// it held (`options.num_predict`) and the keep-alive its policy allows.
public struct OllamaBody: Sendable {
    /// Top-level members (model, messages, stream, ...), without `options` and `keep_alive`.
    public var members: [JSON.Member]
    /// `options` members, without `num_predict` and the options the policy drops.
    public var options: [JSON.Member]
    /// The client's `keep_alive`, when the policy lets clients set it.
    public var keepAlive: JSON?

    public init(members: [JSON.Member], options: [JSON.Member] = [], keepAlive: JSON? = nil) {
        self.members = members
        self.options = options
        self.keepAlive = keepAlive
    }

    /// The body to send: `num_predict` set to `outputBound` (when the call generates text),
    /// and the client's keep-alive or else the operator's.
    public func json(outputBound: Int64?, policy: OllamaOptionPolicy) -> JSON {
        var all = members
        if let keepAlive = keepAlive ?? policy.keepAlive.map(Self.keepAliveValue) {
            all.append(JSON.Member("keep_alive", keepAlive))
        }
        var options = self.options
        if let outputBound { options.append(JSON.Member("num_predict", .int(outputBound))) }
        if !options.isEmpty { all.append(JSON.Member("options", .object(options))) }
        return .object(all)
    }

    /// A keep-alive setting as Ollama reads it: a number is seconds, anything else a Go duration.
    static func keepAliveValue(_ text: String) -> JSON {
        Int64(text).map { .int($0) } ?? .string(text)
    }

    /// A client's `options` under the operator's policy: `num_predict` is the gateway's to set;
    /// governed options are dropped unless allowed; an allowed `num_ctx` is capped.
    static func filteredOptions(_ options: JSONValue?, policy: OllamaOptionPolicy) -> [JSON.Member] {
        var out: [JSON.Member] = []
        options?.forEachMember { key, value in
            let name = key.string ?? ""
            let folded = name.lowercased()
            guard folded != "num_predict", !policy.drops(folded) else { return }
            if folded == "num_ctx", let cap = policy.maxNumCtx, let n = value.double, n > Double(cap) {
                out.append(JSON.Member(name, .int(cap)))
            } else {
                out.append(JSON.Member(name, value.json))
            }
        }
        return out
    }
}
