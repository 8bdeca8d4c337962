import Core
import Foundation

/// The OpenAI and Anthropic prices shipped with lmsvr (`data/provider-prices.json`), used for
/// pass-through models that have no `set-pricing` row.
public struct PriceCatalog: Sendable {
    public struct Entry: Sendable, Equatable {
        public var provider: String
        public var model: String
        public var price: ModelPrice
        /// The most one image can cost on this model, when it is more than the usual bound.
        public var imageTokens: Int64?
    }

    public let entries: [Entry]

    /// The catalog compiled into this binary.
    public static let shipped: PriceCatalog = {
        do {
            return try PriceCatalog(json: Data(embeddedJSON.utf8))
        } catch {
            preconditionFailure("the embedded price catalog is invalid: \(error)")
        }
    }()

    public init(json: Data) throws {
        guard let root = try JSONSerialization.jsonObject(with: json) as? [String: Any],
              let models = root["models"] as? [[String: Any]] else { throw TranslationError("no models array") }
        entries = try models.map { row in
            guard let provider = row["provider"] as? String, let model = row["model"] as? String,
                  let input = row["input"] as? String, let output = row["output"] as? String
            else { throw TranslationError("incomplete row \(row)") }
            return Entry(provider: provider, model: model, price: ModelPrice(
                perRequest: .zero, inputPer1M: try Money(parsing: input), outputPer1M: try Money(parsing: output),
                cachedInputPer1M: try (row["cached_input"] as? String).map { try Money(parsing: $0) }),
                imageTokens: (row["image_tokens"] as? NSNumber)?.int64Value)
        }
    }

    /// The row whose model name is the longest prefix of `model` (dated snapshots match their
    /// family), if any.
    ///
    /// Asked on every metered request (for its image bound), so it compares bytes and allocates
    /// nothing; names here are ASCII (a pass-through name is checked printable ASCII, an Ollama
    /// name is normalised to its ASCII parts), where bytes and characters agree.
    public func entry(for model: String) -> Entry? {
        var best: Entry?
        for entry in entries where Self.isSnapshot(model, of: entry.model) {
            if best.map({ entry.model.utf8.count > $0.model.utf8.count }) ?? true { best = entry }
        }
        return best
    }

    /// `model` is `family` itself or a snapshot of it (`family-...`).
    static func isSnapshot(_ model: String, of family: String) -> Bool {
        let name = model.utf8, prefix = family.utf8
        guard name.starts(with: prefix) else { return false }
        return name.count == prefix.count || name[name.index(name.startIndex, offsetBy: prefix.count)] == UInt8(ascii: "-")
    }
}
