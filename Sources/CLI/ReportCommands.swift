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
        let period = BudgetPeriod(containingMicros: nowMicros())
        let (customer, status) = try await StoreOpener.with(try database.configuration()) { store in
            guard let customer = try await store.customer(id: customerId),
                  let status = try await store.budgetStatus(customerId: customerId, period: period)
            else { throw CLIError.operational("no customer with id \(customerId)") }
            return (customer, status)
        }
        if output.json { return try Output.printJSON(BudgetView(status)) }
        print("Customer \(customer.id): \(customer.name) <\(customer.email)>")
        print("Period:    \(period) (UTC calendar month)")
        print("Budget:    \(status.budget?.description ?? "unlimited")")
        print("Spent:     \(status.spent)")
        print("Held:      \(status.held) (requests in flight)")
        if let remaining = status.remaining, let budget = status.budget {
            let used = budget.nanos > 0 ? Double(status.spent.nanos + status.held.nanos) / Double(budget.nanos) * 100 : 100
            print("Remaining: \(remaining) (\(String(format: "%.1f", used))% used)")
        }
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
