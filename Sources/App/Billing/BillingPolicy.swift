import Core
import Providers

/// How a metered call ended, as far as billing is concerned. `delivered` counts the output the
/// client received (content chunks or deltas, about one token each); `usage` is whatever counts
/// the upstream reported before the end.
enum CallEnding: Sendable {
    /// The upstream finished its answer (a stream's final chunk, or a whole answer).
    case completed(usage: ReportedUsage?, delivered: Int64)
    /// The gateway ended the stream because the delivered output reached the held bound.
    case stoppedAtLimit(usage: ReportedUsage?, delivered: Int64)
    /// The client went away (or the request was cancelled) before the end.
    case clientGone(usage: ReportedUsage?, delivered: Int64)
    /// The upstream failed, refused or fell silent; `status` is what the client saw.
    case upstreamFailed(status: Int, usage: ReportedUsage?, delivered: Int64)
}

/// The billing rules, in one place: what a request holds before it is sent, and what it is
/// charged by how it ended. Pure functions of the price, the configuration and the ending.
enum BillingPolicy {
    /// An upper bound of the prompt's tokens: a byte-level tokenizer makes at most one token per
    /// byte of text, each image costs at most `IMAGE_TOKENS`, and the chat template adds its
    /// markers per message and around the whole.
    static func promptBound(_ size: PromptSize, _ configuration: Configuration) -> Int64 {
        max(0, size.textBytes) + size.images * configuration.imageTokens
            + size.messages * configuration.messageOverheadTokens + configuration.promptOverheadTokens
    }

    /// What a prompt is charged when the upstream reported no count (a stream cut short): about
    /// four bytes of text per token, plus the images.
    static func promptEstimate(_ size: PromptSize, _ configuration: Configuration) -> Int64 {
        max(1, (max(0, size.textBytes) + 3) / 4) + size.images * configuration.imageTokens
    }

    /// The output bound to ask for: the client's limit or the default, never above the
    /// operator's maximum.
    static func outputBound(requested: Int64?, _ configuration: Configuration) -> Int64 {
        min(requested ?? configuration.defaultMaxOutputTokens, configuration.maxOutputTokens)
    }

    /// The largest output bound (at most `upTo`) whose hold fits in `available`, or nil when
    /// not even one token does.
    static func largestOutput(fitting available: Money, price: ModelPrice, promptBound: Int64, choices: Int64,
                              upTo: Int64) -> Int64? {
        func fits(_ output: Int64) -> Bool { price.cost(promptTokens: promptBound, completionTokens: output * choices) <= available }
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
            if let usage {
                return Charge(ticket, status: 200, outcome: .ok, usage: usage, source: .provider)
            }
            return Charge(ticket, status: 200, outcome: .ok,
                          usage: ReportedUsage(promptTokens: ticket.promptEstimate, completionTokens: delivered), source: .estimated)
        case .stoppedAtLimit(let usage, let delivered):
            return Charge(ticket, status: 200, outcome: .outputLimit, usage: partial(usage, delivered, ticket), source: .estimated)
        case .clientGone(let usage, let delivered):
            guard delivered > 0 else { return Charge(ticket, status: 499, outcome: .clientCancelled, usage: .init(), source: .none) }
            return Charge(ticket, status: 499, outcome: .clientCancelled, usage: partial(usage, delivered, ticket), source: .estimated)
        case .upstreamFailed(let status, let usage, let delivered):
            guard delivered > 0 else {
                return Charge(ticket, status: status, outcome: .upstreamError, usage: .init(), source: .none, free: true)
            }
            return Charge(ticket, status: status, outcome: .upstreamError, usage: partial(usage, delivered, ticket), source: .estimated)
        }
    }

    /// Counts for a call that stopped after delivering `delivered` units: the upstream's prompt
    /// count if it sent one, else the estimate; the larger of its output count and the
    /// delivered units (Anthropic's `message_start` reports 1 output token before any is made).
    static func partial(_ usage: ReportedUsage?, _ delivered: Int64, _ ticket: Billing.Ticket) -> ReportedUsage {
        ReportedUsage(promptTokens: (usage?.promptTokens ?? 0) > 0 ? usage!.promptTokens : ticket.promptEstimate,
                      completionTokens: max(usage?.completionTokens ?? 0, delivered, 1),
                      cachedTokens: usage?.cachedTokens ?? 0)
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
                                         cachedTokens: usage.cachedTokens)
            self.cost = free ? .zero : min(full, ticket.held)
        }
    }
}
