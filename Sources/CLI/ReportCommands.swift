import ArgumentParser
import Core
import Foundation

struct CheckBudget: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-budget", abstract: "Show a customer's budget, spend and holds for the current month (UTC).")

    @Argument(help: "The customer's id.") var customerId: Int64
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let now = nowMicros()
        let period = BudgetPeriod(containingMicros: now)
        let (customer, status, use, keys) = try await StoreOpener.with(try database.configuration()) { store in
            guard let customer = try await store.customer(id: customerId),
                  let status = try await store.budgetStatus(customerId: customerId, period: period),
                  let use = try await store.customerLimitUse(customerId: customerId, nowMicros: now)
            else { throw CLIError.operational("no customer with id \(customerId)") }
            var keys: [KeyStanding] = []
            for key in try await store.listKeys(customerId: customerId) where !key.isRevoked {
                if let standing = try await store.keyStanding(keyId: key.id, nowMicros: now) { keys.append(standing) }
            }
            return (customer, status, use, keys)
        }
        if output.json { return try Output.printJSON(BudgetView(status, limits: use, keys: keys)) }
        print("Customer \(customer.id): \(customer.name) <\(customer.email)>")
        print("Period:    \(period) (UTC calendar month)")
        print("Budget:    \(status.budget?.description ?? "unlimited")")
        print("Spent:     \(status.spent)")
        print("Held:      \(status.held) (\(use.inFlight) requests in flight)")
        if let remaining = status.remaining, let budget = status.budget {
            let used = budget.nanos > 0 ? Double(status.spent.nanos + status.held.nanos) / Double(budget.nanos) * 100 : 100
            print("Remaining: \(remaining) (\(String(format: "%.1f", used))% used)")
        }
        print("Limits:    \(LimitText.describe(customer.limits, budget: nil))\(Self.useText(use))")
        guard !keys.isEmpty else { return }
        print("")
        Output.printTable(
            ["KEY", "PREFIX", "SPENT", "HELD", "KEY BUDGET", "LIMITS", "IN USE"],
            keys.map { k in
                [String(k.key.id), k.key.displayPrefix + "…", k.spent?.description ?? "-", k.held?.description ?? "-",
                 k.key.monthlyBudget?.description ?? "-", LimitText.describe(k.key.limits, budget: nil),
                 "\(k.use.inFlight) in flight, \(k.use.requests) req and \(k.use.tokens) tok in the last minute"]
            },
            rightAligned: [0])
    }

    static func useText(_ use: LimitUse) -> String {
        use.limits.isEmpty ? "" : " (\(use.requests) requests and \(use.tokens) tokens in the last minute)"
    }
}

struct UsageReportCommand: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "usage-report", abstract: "Totals and a per-model breakdown of a customer's usage.")

    @Argument(help: "The customer's id.") var customerId: Int64
    @OptionGroup var dates: DateRangeOptions
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let range = try dates.range()
        let report = try await StoreOpener.with(try database.configuration()) { store in
            guard try await store.customer(id: customerId) != nil else {
                throw CLIError.operational("no customer with id \(customerId)")
            }
            return try await store.usageReport(customerId: customerId, range: range)
        }
        if output.json { return try Output.printJSON(ReportView(report)) }
        print("Usage for customer \(customerId), \(range.start?.description ?? "beginning") to \(range.end?.description ?? "today") (UTC, inclusive)")
        print("")
        let lines = report.byModel.map {
            [$0.model, String($0.requests), String($0.promptTokens), String($0.completionTokens), $0.cost.description]
        }
        let total = ["TOTAL", String(report.totalRequests), String(report.totalPromptTokens),
                     String(report.totalCompletionTokens), report.totalCost.description]
        Output.printTable(["MODEL", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "COST"], lines + [total],
                          rightAligned: [1, 2, 3, 4])
    }
}

struct ExportUsage: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "export-usage", abstract: "Export a customer's usage rows as CSV (with a header) or JSON, streaming.")

    @Argument(help: "The customer's id.") var customerId: Int64
    @Option(help: "csv or json (default: csv).") var format: UsageExportFormat?
    @OptionGroup var dates: DateRangeOptions
    @Option(help: "Write to this file instead of stdout (written whole or not at all).") var output: String?
    @OptionGroup var database: DatabaseOptions
    @Flag(name: .long, help: "Same as --format json.") var json = false

    func validate() throws {
        if json, format == .csv { throw CLIError.usage("--json and --format csv contradict each other") }
    }

    func run() async throws {
        let range = try dates.range()
        let writer = try UsageFileWriter(path: output, format: json ? .json : format ?? .csv)
        do {
            try await StoreOpener.with(try database.configuration()) { store in
                guard try await store.customer(id: customerId) != nil else {
                    throw CLIError.operational("no customer with id \(customerId)")
                }
                _ = try await store.exportUsage(customerId: customerId, range: range) { try writer.append($0) }
            }
            try writer.finish()
        } catch {
            writer.abandon()
            throw error
        }
        if let output { FileHandle.standardError.write(Data("Wrote \(writer.rows) rows to \(output).\n".utf8)) }
    }
}


extension UsageExportFormat: ExpressibleByArgument {}
