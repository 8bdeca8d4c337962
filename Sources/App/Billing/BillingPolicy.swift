import Core
import Providers

/// The output a client received: content chunks or deltas (at least one token each), and the
/// bytes of text they carried.
struct Delivered: Sendable, Equatable {
    var units: Int64 = 0
    var textBytes: Int64 = 0

    static let nothing = Delivered()

    /// Tokens delivered, estimated: a chunk is at least one token, and text runs about four
    /// bytes per token (a chunk may carry several, a tool call hundreds).
    var estimate: Int64 { max(units, (textBytes + 3) / 4) }
}

/// How a metered call ended, as far as billing is concerned: what the client received, and
/// whatever counts the upstream reported before the end.
enum CallEnding: Sendable {
    /// The upstream finished its answer (a stream's final chunk, or a whole answer).
    case completed(usage: ReportedUsage?, delivered: Delivered)
    /// The gateway ended the stream because the delivered output reached the held bound.
    case stoppedAtLimit(usage: ReportedUsage?, delivered: Delivered)
    /// The client went away (or the request was cancelled) before the end.
    case clientGone(usage: ReportedUsage?, delivered: Delivered)
    /// The upstream failed, refused or fell silent; `status` is what the client saw.
    case upstreamFailed(status: Int, usage: ReportedUsage?, delivered: Delivered)
}

/// The billing rules, in one place: what a request holds before it is sent, and what it is
/// charged by how it ended. Pure functions of the price, the configuration and the ending.
enum BillingPolicy {
    /// An upper bound of the prompt's tokens: a byte-level tokenizer makes at most one token per
    /// byte of text, each image costs at most `IMAGE_TOKENS`, and the chat template adds its
    /// markers per message and around the whole.
    static func promptBound(_ size: PromptSize, imageTokens: Int64, _ configuration: Configuration) -> Int64 {
        max(0, size.textBytes) + size.images * imageTokens
            + size.messages * configuration.messageOverheadTokens + configuration.promptOverheadTokens
    }

    /// What a prompt is charged when the upstream reported no count (a stream cut short): about
    /// four bytes of text per token, plus the images.
    static func promptEstimate(_ size: PromptSize, imageTokens: Int64) -> Int64 {
        max(1, (max(0, size.textBytes) + 3) / 4) + size.images * imageTokens
    }

    /// The most one image can cost on `model`: the shipped catalog's figure where it has one
    /// (gpt-4o-mini bills tens of thousands), else `IMAGE_TOKENS`.
    static func imageTokens(_ model: String, _ configuration: Configuration) -> Int64 {
        max(configuration.imageTokens, PriceCatalog.shipped.entry(for: model)?.imageTokens ?? 0)
    }

    /// The output bound to ask for: the client's limit or the default, never above the
    /// operator's maximum.
    static func outputBound(requested: Int64?, _ configuration: Configuration) -> Int64 {
        min(requested ?? configuration.defaultMaxOutputTokens, configuration.maxOutputTokens)
    }

    /// The largest output bound (at most `upTo`) whose hold fits in `available`, or nil when
    /// not even one token does.
    static func largestOutput(fitting available: Money, price: ModelPrice, promptBound: Int64, choices: Int64,
                              upTo: Int64, cacheWrites: CacheWrites = .none) -> Int64? {
        func fits(_ output: Int64) -> Bool {
            price.cost(promptTokens: promptBound, completionTokens: output * choices, cacheWrites: cacheWrites) <= available
        }
        guard upTo >= 1, fits(1) else { return nil }
        var low: Int64 = 1, high = upTo
        while low < high {
            let mid = low + (high - low + 1) / 2
            if fits(mid) { low = mid } else { high = mid - 1 }
        }
        return low
    }

    /// The ledger facts of an ending: status, outcome, token counts and their source, and the
    /// cost, which never exceeds what was held.
    ///
    /// - A completed call is charged the upstream's counts (an estimate where it gave none).
    /// - A call that delivered output and then stopped (the client left, the upstream failed,
    ///   the bound was reached) is charged its flat fees, its prompt, and the output delivered
    ///   (or the upstream's count, if larger).
    /// - A call that delivered nothing is free when the upstream failed; when the client left,
    ///   it pays the flat fees only.
    static func charge(_ ending: CallEnding, ticket: Billing.Ticket) -> Charge {
        switch ending {
        case .completed(let usage, let delivered):
            if var usage {
                // Never fewer output tokens than chunks delivered (an upstream may report only
                // part of what it streamed).
                usage.completionTokens = max(usage.completionTokens, delivered.units)
                return Charge(ticket, status: 200, outcome: .ok, usage: usage, source: .provider)
            }
            return Charge(ticket, status: 200, outcome: .ok, usage: ReportedUsage(
                promptTokens: ticket.promptEstimate, completionTokens: delivered.estimate), source: .estimated)
        case .stoppedAtLimit(let usage, let delivered):
            return Charge(ticket, status: 200, outcome: .outputLimit, usage: partial(usage, delivered, ticket), source: .estimated)
        case .clientGone(let usage, let delivered):
            guard delivered != .nothing else { return Charge(ticket, status: 499, outcome: .clientCancelled, usage: .init(), source: .none) }
            return Charge(ticket, status: 499, outcome: .clientCancelled, usage: partial(usage, delivered, ticket), source: .estimated)
        case .upstreamFailed(let status, let usage, let delivered):
            guard delivered != .nothing else {
                return Charge(ticket, status: status, outcome: .upstreamError, usage: .init(), source: .none, free: true)
            }
            return Charge(ticket, status: status, outcome: .upstreamError, usage: partial(usage, delivered, ticket), source: .estimated)
        }
    }

    /// Counts for a call that stopped after delivering output: the upstream's prompt count if it
    /// sent one, else the estimate; the larger of its output count and the delivered estimate
    /// (Anthropic's `message_start` reports 1 output token before any is made).
    ///
    /// An estimate never exceeds the output bound the upstream was given.
    static func partial(_ usage: ReportedUsage?, _ delivered: Delivered, _ ticket: Billing.Ticket) -> ReportedUsage {
        let bound = ticket.outputBound.map { $0 * ticket.choices } ?? .max
        let estimate = min(max(delivered.estimate, 1), bound)
        guard let usage, usage.promptTokens > 0 else {
            return ReportedUsage(promptTokens: ticket.promptEstimate, completionTokens: max(usage?.completionTokens ?? 0, estimate))
        }
        var counted = usage
        counted.completionTokens = max(usage.completionTokens, estimate)
        return counted
    }

    /// What the prompt's bound may cost beyond the input price: an Anthropic prompt may be
    /// written to a one-hour cache (2× input) in full.
    static func holdCacheWrites(_ provider: Provider, promptBound: Int64) -> CacheWrites {
        provider == .anthropic ? CacheWrites(oneHour: promptBound) : .none
    }

    struct Charge {
        var status: Int
        var outcome: Outcome
        var usage: ReportedUsage
        var source: TokenSource
        var cost: Money

        init(_ ticket: Billing.Ticket, status: Int, outcome: Outcome, usage: ReportedUsage, source: TokenSource, free: Bool = false) {
            self.status = status
            self.outcome = outcome
            self.usage = usage
            self.source = source
            let full = ticket.price.cost(promptTokens: usage.promptTokens, completionTokens: usage.completionTokens,
                                         cachedTokens: usage.cachedTokens, cacheWrites: usage.cacheWrites)
            self.cost = free ? .zero : min(full, ticket.held)
        }
    }
}
