/// One rollup row: a model's use on one UTC day (one customer's, or everyone's summed).
public struct DailyModelUsage: Sendable, Hashable, Codable {
    public var day: UTCDay
    public var model: String
    public var requests: Int64
    public var promptTokens: Int64
    public var completionTokens: Int64
    public var cost: Money

    public init(day: UTCDay, model: String, requests: Int64, promptTokens: Int64, completionTokens: Int64, cost: Money) {
        self.day = day
        self.model = model
        self.requests = requests
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.cost = cost
    }
}

extension UsageReport {
    /// The totals per model (by name) and per day (in order) of a range's rollup rows.
    public init(customerId: Int64, range: DayRange, daily: [DailyModelUsage]) {
        var models: [String: Line] = [:], days: [UTCDay: Day] = [:]
        for row in daily {
            var line = models[row.model] ?? Line(model: row.model, requests: 0, promptTokens: 0, completionTokens: 0, cost: .zero)
            line.requests += row.requests
            line.promptTokens += row.promptTokens
            line.completionTokens += row.completionTokens
            line.cost += row.cost
            models[row.model] = line
            var day = days[row.day] ?? Day(day: row.day, requests: 0, cost: .zero)
            day.requests += row.requests
            day.cost += row.cost
            days[row.day] = day
        }
        self.init(customerId: customerId, range: range, byModel: models.values.sorted { $0.model < $1.model },
                  byDay: days.values.sorted { $0.day < $1.day })
    }

    /// The models, costliest first (then by name).
    public var byCost: [Line] {
        byModel.sorted { $0.cost != $1.cost ? $0.cost.nanos > $1.cost.nanos : $0.model < $1.model }
    }
}

/// A customer with where their month stands: what the dashboard's customer table shows.
public struct CustomerMonth: Sendable, Hashable {
    public var customer: Customer
    public var status: BudgetStatus

    public init(customer: Customer, status: BudgetStatus) {
        self.customer = customer
        self.status = status
    }

    /// The budget left (never below zero); nil when the budget is unlimited.
    public var remaining: Money? {
        status.budget.map { Money(nanos: max(0, $0.nanos - status.spent.nanos - status.held.nanos)) }
    }

    /// Spent and held as parts per million of the budget (0 when unlimited), for sorting and bars.
    public var usedPPM: Int64 {
        guard let budget = status.budget, budget.nanos > 0 else { return status.budget == nil ? 0 : 1_000_000 }
        let used = Double(status.spent.nanos) + Double(status.held.nanos)
        return Int64(min(1_000_000, used / Double(budget.nanos) * 1_000_000))
    }
}

extension BudgetPeriod {
    /// `YYYY-MM`, strictly (four digits, two digits, month 1–12).
    public init?(parsing text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              parts.allSatisfy({ $0.utf8.allSatisfy { (48...57).contains($0) } }),
              let year = Int(parts[0]), let month = Int(parts[1]), year >= 1, (1...12).contains(month)
        else { return nil }
        self.init(year: year, month: month)
    }

    public var previous: BudgetPeriod { month == 1 ? BudgetPeriod(year: year - 1, month: 12) : BudgetPeriod(year: year, month: month - 1) }
    public var next: BudgetPeriod { month == 12 ? BudgetPeriod(year: year + 1, month: 1) : BudgetPeriod(year: year, month: month + 1) }
}

extension UTCDay {
    /// The day after.
    public var next: UTCDay { UTCDay(containingMicros: endMicros) }
}
