import Core

/// The operator dashboard's pages, rendered from the rollups, the budget rows and indexed
/// ledger reads: nothing here scans the ledger, so a month of ten million rows costs what a
/// month of ten does.
struct AdminPages: Sendable {
    let store: any Store
    let ollama: OllamaPool
    let configuration: Configuration

    /// The month `text` names (`YYYY-MM`), else the current one, with its days up to today.
    static func month(_ text: String?, nowMicros: Int64) -> (period: BudgetPeriod, days: [UTCDay]) {
        let now = BudgetPeriod(containingMicros: nowMicros)
        let period = text.flatMap(BudgetPeriod.init(parsing:)).flatMap { $0 <= now ? $0 : nil } ?? now
        let today = UTCDay(containingMicros: nowMicros)
        var days: [UTCDay] = []
        var day = UTCDay(year: period.year, month: period.month, day: 1)!
        while day.month == period.month && day.year == period.year && day <= today {
            days.append(day)
            day = day.next
        }
        return (period, days)
    }

    /// Series a chart draws at most: the seven costliest models and one for all the others (a
    /// customer can make up any number of model names; the page must stay small).
    static let chartSeries = 8
    /// Rows a model table shows at most, the costliest first.
    static let tableModels = 50
    /// Customers the customers page lists at most, in the order asked for.
    static let tableCustomers = 1_000

    /// Money per model per day for a chart: the models in `ranked` order (costliest first), all
    /// but the first seven folded into one "other" series.
    static func series(_ rows: [DailyModelUsage], ranked: [String]) -> (models: [String], values: [String: [UTCDay: Money]]) {
        let shown = ranked.count <= chartSeries ? ranked : Array(ranked.prefix(chartSeries - 1))
        let kept = Set(shown)
        let other = ranked.count > shown.count ? "other (\(ranked.count - shown.count) models)" : nil
        var values: [String: [UTCDay: Money]] = [:]
        for row in rows {
            let name = kept.contains(row.model) ? row.model : other!
            values[name, default: [:]][row.day, default: .zero] += row.cost
        }
        return (shown + (other.map { [$0] } ?? []), values)
    }

    static func monthPicker(_ period: BudgetPeriod, path: String) -> String {
        let previous = period.previous
        let next = period.next
        let now = BudgetPeriod(containingMicros: nowMicros())
        return "<p class=\"months\"><a href=\"\(path)?month=\(previous)\">← \(previous)</a> <strong>\(period)</strong>"
            + (next <= now ? " <a href=\"\(path)?month=\(next)\">\(next) →</a>" : "") + "</p>"
    }

    // MARK: Overview

    func overview(month text: String?) async throws -> String {
        let (period, days) = Self.month(text, nowMicros: nowMicros())
        let range = DayRange(start: days.first, end: days.last)
        let rows = days.isEmpty ? [] : try await store.dailyUsage(customerId: nil, range: range)
        let customers = try await store.customerMonths(period: period)
        let report = UsageReport(customerId: 0, range: range, daily: rows), ranked = report.byCost
        let (models, values) = Self.series(rows, ranked: ranked.map(\.model))
        var body = Self.monthPicker(period, path: "/admin")
        body += """
            <section class="tiles">
            <div class="tile"><span>Spend</span><strong id="total-spend">\(HTML.money(report.totalCost))</strong></div>
            <div class="tile"><span>Requests</span><strong id="total-requests">\(HTML.grouped(report.totalRequests))</strong></div>
            <div class="tile"><span>Tokens</span><strong id="total-tokens">\(HTML.grouped(report.totalPromptTokens + report.totalCompletionTokens))</strong></div>
            <div class="tile"><span>Customers</span><strong>\(HTML.grouped(customers.count))</strong></div>
            </section>
            <h2>Spend per day</h2>
            \(SVGChart.stackedDays(days: days, series: models, values: values, label: "spend per day in \(period), by model"))
            <h2>Per model</h2>
            \(Self.modelTable(ranked))
            <h2>Nearest their budget</h2>
            \(CustomerTables.table(Array(customers.filter { $0.status.budget != nil }.sorted { $0.usedPPM > $1.usedPPM }.prefix(5)),
                                   sortable: false))
            <h2>Upstreams</h2>
            \(upstreams())
            """
        return HTML.page(title: "Overview", active: "/admin", body: body)
    }

    /// The month per model, `ranked` costliest first (at most `tableModels` rows).
    static func modelTable(_ ranked: [UsageReport.Line]) -> String {
        guard !ranked.isEmpty else { return "<p class=\"muted\">No requests this month.</p>" }
        let shown = ranked.prefix(tableModels)
        return "<table id=\"models\"><thead><tr><th>Model</th><th class=\"num\">Requests</th><th class=\"num\">Prompt tokens</th>"
            + "<th class=\"num\">Completion tokens</th><th class=\"num\">Cost</th></tr></thead><tbody>"
            + shown.map { t in
                "<tr data-model=\"\(HTML.escape(t.model))\"><td>\(HTML.escape(t.model))</td><td class=\"num\">\(HTML.grouped(t.requests))</td>"
                    + "<td class=\"num\">\(HTML.grouped(t.promptTokens))</td><td class=\"num\">\(HTML.grouped(t.completionTokens))</td>"
                    + "<td class=\"num\">\(HTML.money(t.cost))</td></tr>"
            }.joined()
            + (ranked.count > shown.count ? "<tr class=\"muted\"><td colspan=\"5\">and \(ranked.count - shown.count) more models "
                + "(<code>lmsvr usage-report</code> lists them all)</td></tr>" : "")
            + "</tbody></table>"
    }

    func upstreams() -> String {
        var rows = ollama.servers.map { s in
            "<tr><td>Ollama</td><td>\(HTML.escape(s.name))</td><td class=\"\(s.healthy ? "ok" : "bad")\">\(s.healthy ? "healthy" : "down")</td>"
                + "<td>\(HTML.escape(s.version ?? (s.checkedAt == nil ? "not checked" : "")))</td><td class=\"num\">\(s.inFlight)</td></tr>"
        }
        if configuration.openAIAPIKey != nil { rows.append("<tr><td>OpenAI</td><td>\(HTML.escape(OllamaServer.origin(of: configuration.openAIBaseURL)))</td><td>configured</td><td></td><td></td></tr>") }
        if configuration.anthropicAPIKey != nil { rows.append("<tr><td>Anthropic</td><td>\(HTML.escape(OllamaServer.origin(of: configuration.anthropicBaseURL)))</td><td>configured</td><td></td><td></td></tr>") }
        return "<table><thead><tr><th>Provider</th><th>Server</th><th>State</th><th>Version</th><th class=\"num\">In flight</th></tr></thead><tbody>"
            + rows.joined() + "</tbody></table>"
            + (ollama.isSingle ? "<p class=\"muted\">One Ollama server: it is used without background checks (see <code>/health/ollama</code>).</p>" : "")
    }

    // MARK: Customers

    func customers(sort: String?) async throws -> String {
        let period = BudgetPeriod(containingMicros: nowMicros())
        var list = try await store.customerMonths(period: period)
        switch sort ?? "used" {
        case "name": list.sort { $0.customer.name.lowercased() < $1.customer.name.lowercased() }
        case "spent": list.sort { $0.status.spent.nanos > $1.status.spent.nanos }
        case "remaining": list.sort { ($0.remaining?.nanos ?? .max) < ($1.remaining?.nanos ?? .max) }
        case "id": break
        default: list.sort { $0.usedPPM != $1.usedPPM ? $0.usedPPM > $1.usedPPM : $0.customer.id < $1.customer.id }
        }
        let shown = Array(list.prefix(Self.tableCustomers))
        let body = "<p class=\"muted\">\(period): budgets, what is spent and held now, and what is left. Sort by a column's name.</p>"
            + CustomerTables.table(shown, sortable: true)
            + (list.count > shown.count ? "<p class=\"muted\">The first \(shown.count) of \(HTML.grouped(list.count)) in this order; "
                + "<code>lmsvr list-customers</code> lists them all.</p>" : "")
        return HTML.page(title: "Customers", active: "/admin/customers", body: body)
    }

    func customer(id: Int64, month text: String?) async throws -> String? {
        guard let customer = try await store.customer(id: id) else { return nil }
        let (period, days) = Self.month(text, nowMicros: nowMicros())
        let status = try await store.budgetStatus(customerId: id, period: period)
            ?? BudgetStatus(customerId: id, period: period, budget: customer.monthlyBudget, spent: .zero, held: .zero)
        let month = CustomerMonth(customer: customer, status: status)
        let range = DayRange(start: days.first, end: days.last)
        let rows = days.isEmpty ? [] : try await store.dailyUsage(customerId: id, range: range)
        let ranked = UsageReport(customerId: id, range: range, daily: rows).byCost
        let (models, values) = Self.series(rows, ranked: ranked.map(\.model))
        let keys = try await store.listKeys(customerId: id)
        let latest = try await store.latestUsage(customerId: id, limit: 50)
        let now = nowMicros()
        var body = "<p class=\"muted\">\(HTML.escape(customer.email)) · customer \(customer.id) · since \(HTML.time(customer.createdAtMicros))</p>"
        body += Self.monthPicker(period, path: "/admin/customers/\(id)")
        body += """
            <section class="tiles">
            <div class="tile"><span>Budget</span><strong id="budget">\(customer.monthlyBudget.map(HTML.money) ?? "unlimited")</strong></div>
            <div class="tile"><span>Spent</span><strong id="spent">\(HTML.money(status.spent))</strong></div>
            <div class="tile"><span>Held</span><strong id="held">\(HTML.money(status.held))</strong></div>
            <div class="tile"><span>Remaining</span><strong id="remaining">\(month.remaining.map(HTML.money) ?? "unlimited")</strong>\(SVGChart.budgetBar(month))</div>
            </section>
            <h2>Spend per day</h2>
            \(SVGChart.stackedDays(days: days, series: models, values: values, label: "\(customer.name)'s spend per day in \(period), by model"))
            \(Self.modelTable(ranked))
            <h2>Keys</h2>
            \(Self.keyTable(keys, now: now))
            <h2>Latest requests</h2>
            \(Self.ledgerTable(latest))
            """
        return HTML.page(title: customer.name, active: "/admin/customers", body: body)
    }

    static func keyTable(_ keys: [KeyRecord], now: Int64) -> String {
        guard !keys.isEmpty else { return "<p class=\"muted\">No keys.</p>" }
        return "<table id=\"keys\"><thead><tr><th>Id</th><th>Prefix</th><th>Label</th><th>Status</th><th>Expires</th><th>Last used</th>"
            + "<th>Limits</th></tr></thead><tbody>" + keys.map { key in
                let status = key.isRevoked ? "revoked" : key.isExpired(atMicros: now) ? "expired" : "active"
                var limits: [String] = []
                if let v = key.limits.requestsPerMinute { limits.append("\(v) rpm") }
                if let v = key.limits.tokensPerMinute { limits.append("\(v) tpm") }
                if let v = key.limits.concurrency { limits.append("\(v) at once") }
                if let budget = key.monthlyBudget { limits.append("\(HTML.money(budget))/month") }
                return "<tr><td>\(key.id)</td><td><code>\(HTML.escape(key.displayPrefix))</code></td><td>\(HTML.escape(key.name ?? ""))</td>"
                    + "<td class=\"\(status == "active" ? "ok" : "bad")\">\(status)</td><td>\(key.expiresAtMicros.map(HTML.time) ?? "never")</td>"
                    + "<td>\(key.lastUsedAtMicros.map(HTML.time) ?? "—")</td><td>\(limits.isEmpty ? "none" : limits.joined(separator: ", "))</td></tr>"
            }.joined() + "</tbody></table>"
    }

    static func ledgerTable(_ rows: [UsageRecord]) -> String {
        guard !rows.isEmpty else { return "<p class=\"muted\">No requests yet.</p>" }
        return "<table id=\"ledger\"><thead><tr><th>Time</th><th>Request</th><th>Endpoint</th><th>Model</th><th>Status</th>"
            + "<th>Outcome</th><th class=\"num\">Tokens in / out</th><th class=\"num\">Cost</th></tr></thead><tbody>"
            + rows.map { u in
                "<tr><td>\(HTML.time(u.createdAtMicros))</td><td><code>\(HTML.escape(u.requestId))</code></td><td>\(HTML.escape(u.endpoint))</td>"
                    + "<td>\(HTML.escape(u.model))</td><td>\(u.httpStatus)</td><td>\(HTML.escape(u.outcome.rawValue))</td>"
                    + "<td class=\"num\">\(HTML.grouped(u.promptTokens)) / \(HTML.grouped(u.completionTokens))</td><td class=\"num\">\(HTML.money(u.cost))</td></tr>"
            }.joined() + "</tbody></table>"
    }

    // MARK: Models

    func models() async throws -> String {
        let now = nowMicros()
        let (period, days) = Self.month(nil, nowMicros: now)
        let current = try await store.currentPrices(atMicros: now)
        let history = try await store.priceHistory()
        let range = DayRange(start: days.first, end: days.last)
        let rows = days.isEmpty ? [] : try await store.dailyUsage(customerId: nil, range: range)
        func priceCells(_ p: ModelPrice) -> String {
            "<td class=\"num\">\(HTML.money(p.perRequest))</td><td class=\"num\">\(HTML.money(p.perModel))</td>"
                + "<td class=\"num\">\(HTML.money(p.inputPer1M))</td><td class=\"num\">\(HTML.money(p.outputPer1M))</td>"
                + "<td class=\"num\">\(p.cachedInputPer1M.map(HTML.money) ?? "—")</td>"
        }
        let head = "<th class=\"num\">Per request</th><th class=\"num\">Per model</th><th class=\"num\">Input / 1M</th>"
            + "<th class=\"num\">Output / 1M</th><th class=\"num\">Cached input / 1M</th>"
        var body = "<h2>Prices in force</h2>"
        body += current.isEmpty ? "<p class=\"muted\">No prices set: requests cost the default \(HTML.money(configuration.defaultPricePerRequest)) each.</p>"
            : "<table id=\"prices\"><thead><tr><th>Model</th>\(head)<th>Since</th></tr></thead><tbody>" + current.map {
                "<tr data-model=\"\(HTML.escape($0.model))\"><td>\(HTML.escape($0.model))</td>\(priceCells($0.price))<td>\(HTML.time($0.effectiveFromMicros))</td></tr>"
            }.joined() + "</tbody></table>"
        body += "<h2>Requests and cost in \(period)</h2>" + Self.modelTable(UsageReport(customerId: 0, range: range, daily: rows).byCost)
        body += "<h2>Price history</h2>"
        body += history.isEmpty ? "<p class=\"muted\">None.</p>"
            : "<table id=\"price-history\"><thead><tr><th>Model</th>\(head)<th>From</th></tr></thead><tbody>" + history.map {
                "<tr><td>\(HTML.escape($0.model))</td>\(priceCells($0.price))<td>\(HTML.time($0.effectiveFromMicros))</td></tr>"
            }.joined() + "</tbody></table>"
        return HTML.page(title: "Models", active: "/admin/models", body: body)
    }
}

/// The customer table, on the overview (the five nearest their budget) and the customers page.
enum CustomerTables {
    static func table(_ list: [CustomerMonth], sortable: Bool) -> String {
        guard !list.isEmpty else { return "<p class=\"muted\">No customers with a budget yet.</p>" }
        func header(_ title: String, _ key: String, numeric: Bool = false) -> String {
            let cls = numeric ? " class=\"num\"" : ""
            return sortable ? "<th\(cls)><a href=\"/admin/customers?sort=\(key)\">\(title)</a></th>" : "<th\(cls)>\(title)</th>"
        }
        return "<table class=\"customers\"><thead><tr>\(header("Id", "id"))\(header("Name", "name"))<th>Email</th>"
            + "<th class=\"num\">Budget</th>\(header("Spent", "spent", numeric: true))<th class=\"num\">Held</th>"
            + "\(header("Remaining", "remaining", numeric: true))\(header("Used", "used"))</tr></thead><tbody>"
            + list.map { m in
                "<tr data-customer=\"\(m.customer.id)\"><td>\(m.customer.id)</td><td><a href=\"/admin/customers/\(m.customer.id)\">"
                    + "\(HTML.escape(m.customer.name))</a></td><td>\(HTML.escape(m.customer.email))</td>"
                    + "<td class=\"num\">\(m.status.budget.map(HTML.money) ?? "unlimited")</td><td class=\"num\">\(HTML.money(m.status.spent))</td>"
                    + "<td class=\"num\">\(HTML.money(m.status.held))</td><td class=\"num\">\(m.remaining.map(HTML.money) ?? "—")</td>"
                    + "<td>\(SVGChart.budgetBar(m))</td></tr>"
            }.joined() + "</tbody></table>"
    }
}
