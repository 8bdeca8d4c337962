import Foundation
import Core

/// The JSON shapes the CLI prints with `--json`: snake_case, money as exact decimal strings
/// (plus the integer nano-dollars), times as RFC 3339 UTC.
struct CustomerView: Encodable {
    var id: Int64
    var name: String
    var email: String
    var monthly_budget_usd: String?
    var monthly_budget_nanos: Int64?
    var created_at: String
    var limits: LimitsView

    init(_ c: Customer) {
        limits = LimitsView(c.limits, budget: nil)
        id = c.id
        name = c.name
        email = c.email
        monthly_budget_usd = c.monthlyBudget?.decimalString
        monthly_budget_nanos = c.monthlyBudget?.nanos
        created_at = Timestamp.iso8601(micros: c.createdAtMicros)
    }
}

struct KeyView: Encodable {
    var id: Int64
    var customer_id: Int64
    var name: String?
    var prefix: String
    var created_at: String
    var revoked: Bool
    var revoked_at: String?
    var expires_at: String?
    /// After `rotate-key`: until when the previous secret works.
    var previous_secret_expires_at: String?
    var last_used_at: String?
    /// `null`: every API family / every model.
    var apis: Nullable<[String]>
    var models: Nullable<[String]>
    var limits: LimitsView
    /// Present only right after `generate-key` or `rotate-key`.
    var key: String?
    var warning: String?

    init(_ k: KeyRecord, plaintext: String? = nil) {
        id = k.id
        customer_id = k.customerId
        name = k.name
        prefix = k.displayPrefix
        created_at = Timestamp.iso8601(micros: k.createdAtMicros)
        revoked = k.isRevoked
        revoked_at = k.revokedAtMicros.map { Timestamp.iso8601(micros: $0) }
        expires_at = k.expiresAtMicros.map { Timestamp.iso8601(micros: $0) }
        previous_secret_expires_at = k.previousExpiresAtMicros.map { Timestamp.iso8601(micros: $0) }
        last_used_at = k.lastUsedAtMicros.map { Timestamp.iso8601(micros: $0) }
        apis = Nullable(k.scope.apis.map { APIFamily.allCases.filter($0.contains).map(\.rawValue) })
        models = Nullable(k.scope.models)
        limits = LimitsView(k.limits, budget: k.monthlyBudget)
        key = plaintext
        warning = plaintext == nil ? nil : "Store this key now: it cannot be shown again."
    }
}

/// Limits: each `null` for none.
struct LimitsView: Encodable {
    var rpm: Nullable<Int64>
    var tpm: Nullable<Int64>
    var concurrency: Nullable<Int64>
    /// A key's own monthly budget (keys only).
    var monthly_budget_usd: Nullable<String>

    init(_ limits: RateLimits, budget: Money?) {
        rpm = Nullable(limits.requestsPerMinute)
        tpm = Nullable(limits.tokensPerMinute)
        concurrency = Nullable(limits.concurrency)
        monthly_budget_usd = Nullable(budget?.decimalString)
    }
}

/// An optional written as `null` when absent (plain optionals are left out), where "none" is
/// an answer worth showing.
struct Nullable<Value: Encodable>: Encodable {
    var value: Value?

    init(_ value: Value?) { self.value = value }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        if let value { try container.encode(value) } else { try container.encodeNil() }
    }
}

/// A limit's use right now (`check-budget`).
struct LimitUseView: Encodable {
    var limits: LimitsView
    var requests_in_last_minute: Int64
    var tokens_in_last_minute: Int64
    var in_flight: Int64

    init(_ use: LimitUse, budget: Money? = nil) {
        limits = LimitsView(use.limits, budget: budget)
        requests_in_last_minute = use.requests
        tokens_in_last_minute = use.tokens
        in_flight = use.inFlight
    }
}

/// A key's month in `check-budget`.
struct KeyStandingView: Encodable {
    var key_id: Int64
    var prefix: String
    var name: String?
    /// Kept only while the key has its own budget (`null` without one).
    var spent_usd: Nullable<String>
    var held_usd: Nullable<String>
    var use: LimitUseView

    init(_ s: KeyStanding) {
        key_id = s.key.id
        prefix = s.key.displayPrefix
        name = s.key.name
        spent_usd = Nullable(s.spent?.decimalString)
        held_usd = Nullable(s.held?.decimalString)
        use = LimitUseView(s.use, budget: s.key.monthlyBudget)
    }
}

struct PriceView: Encodable {
    var model: String
    var per_request_usd: String
    var per_model_usd: String
    var input_per_1m_usd: String
    var output_per_1m_usd: String
    var cached_input_per_1m_usd: String?
    var effective_from: String

    init(_ p: PriceRecord) {
        model = p.model
        per_request_usd = p.price.perRequest.decimalString
        per_model_usd = p.price.perModel.decimalString
        input_per_1m_usd = p.price.inputPer1M.decimalString
        output_per_1m_usd = p.price.outputPer1M.decimalString
        cached_input_per_1m_usd = p.price.cachedInputPer1M?.decimalString
        effective_from = Timestamp.iso8601(micros: p.effectiveFromMicros)
    }
}

struct BudgetView: Encodable {
    var customer_id: Int64
    var period: String
    var unlimited: Bool
    var budget_usd: String?
    var spent_usd: String
    var held_usd: String
    var remaining_usd: String?
    var budget_nanos: Int64?
    var spent_nanos: Int64
    var held_nanos: Int64
    /// The customer's rate limits in use, and each key's own month (check-budget).
    var limits: LimitUseView?
    var keys: [KeyStandingView]?

    init(_ s: BudgetStatus, limits: LimitUse? = nil, keys: [KeyStanding]? = nil) {
        self.limits = limits.map { LimitUseView($0) }
        self.keys = keys.map { $0.map(KeyStandingView.init) }
        customer_id = s.customerId
        period = s.period.description
        unlimited = s.budget == nil
        budget_usd = s.budget?.decimalString
        spent_usd = s.spent.decimalString
        held_usd = s.held.decimalString
        remaining_usd = s.remaining?.decimalString
        budget_nanos = s.budget?.nanos
        spent_nanos = s.spent.nanos
        held_nanos = s.held.nanos
    }
}

struct ReportView: Encodable {
    struct Line: Encodable {
        var model: String
        var requests: Int64
        var prompt_tokens: Int64
        var completion_tokens: Int64
        var cost_usd: String
        var cost_nanos: Int64
    }
    var customer_id: Int64
    var start_date: String?
    var end_date: String?
    var total_requests: Int64
    var total_prompt_tokens: Int64
    var total_completion_tokens: Int64
    var total_cost_usd: String
    var total_cost_nanos: Int64
    var by_model: [Line]

    init(_ r: UsageReport) {
        customer_id = r.customerId
        start_date = r.range.start?.description
        end_date = r.range.end?.description
        total_requests = r.totalRequests
        total_prompt_tokens = r.totalPromptTokens
        total_completion_tokens = r.totalCompletionTokens
        total_cost_usd = r.totalCost.decimalString
        total_cost_nanos = r.totalCost.nanos
        by_model = r.byModel.map {
            Line(model: $0.model, requests: $0.requests, prompt_tokens: $0.promptTokens,
                 completion_tokens: $0.completionTokens, cost_usd: $0.cost.decimalString, cost_nanos: $0.cost.nanos)
        }
    }
}

