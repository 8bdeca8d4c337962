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

    enum Format: String, ExpressibleByArgument, CaseIterable { case csv, json }

    @Argument(help: "The customer's id.") var customerId: Int64
    @Option(help: "csv or json (default: csv).") var format: Format?
    @OptionGroup var dates: DateRangeOptions
    @Option(help: "Write to this file instead of stdout (written whole or not at all).") var output: String?
    @OptionGroup var database: DatabaseOptions
    @Flag(name: .long, help: "Same as --format json.") var json = false

    func validate() throws {
        if json, format == .csv { throw CLIError.usage("--json and --format csv contradict each other") }
    }

    func run() async throws {
        let range = try dates.range()
        let asJSON = json || format == .json
        let writer = try ExportWriter(path: output)
        do {
            try await StoreOpener.with(try database.configuration()) { store in
                guard try await store.customer(id: customerId) != nil else {
                    throw CLIError.operational("no customer with id \(customerId)")
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                writer.write(asJSON ? "[" : UsageRowView.csvHeader.joined(separator: ",") + "\r\n")
                let count = try await store.exportUsage(customerId: customerId, range: range) { row in
                    let view = UsageRowView(row)
                    if asJSON {
                        let data = try encoder.encode(view)
                        writer.write(writer.rows == 0 ? "\n" : ",\n")
                        writer.write(String(decoding: data, as: UTF8.self))
                    } else {
                        writer.write(view.csvFields.map(csvField).joined(separator: ",") + "\r\n")
                    }
                    writer.rows += 1
                }
                if asJSON { writer.write(count == 0 ? "]\n" : "\n]\n") }
            }
            try writer.finish()
        } catch {
            writer.abandon()
            throw error
        }
        if let output { FileHandle.standardError.write(Data("Wrote \(writer.rows) rows to \(output).\n".utf8)) }
    }
}

/// Buffered output for exports. A file is written under a temporary name and renamed into place
/// only when complete, so a failed export never leaves a truncated file behind.
///
/// `@unchecked Sendable`: the store calls the row closure sequentially on one thread.
final class ExportWriter: @unchecked Sendable {
    private let file: UnsafeMutablePointer<FILE>
    private let path: String?
    private let temporaryPath: String?
    var rows = 0

    init(path: String?) throws {
        self.path = path
        if let path {
            let temporary = path + ".partial-\(getpid())"
            guard let file = fopen(temporary, "w") else {
                throw CLIError.operational("cannot write \(path): \(String(cString: strerror(errno)))")
            }
            self.file = file
            self.temporaryPath = temporary
        } else {
            self.file = fdopen(dup(STDOUT_FILENO), "w")!  // our own buffered stream on stdout
            self.temporaryPath = nil
        }
    }

    func write(_ text: String) {
        var text = text
        text.withUTF8 { _ = fwrite($0.baseAddress, 1, $0.count, file) }
    }

    func finish() throws {
        guard fflush(file) == 0 else { throw CLIError.operational("write failed: \(String(cString: strerror(errno)))") }
        if let temporaryPath, let path {
            guard fsync(fileno(file)) == 0 else { throw CLIError.operational("cannot write \(path): \(String(cString: strerror(errno)))") }
            guard fclose(file) == 0 else { throw CLIError.operational("cannot write \(path): \(String(cString: strerror(errno)))") }
            guard rename(temporaryPath, path) == 0 else {
                throw CLIError.operational("cannot move the export into \(path): \(String(cString: strerror(errno)))")
            }
        } else {
            fclose(file)
        }
    }

    func abandon() {
        if let temporaryPath {
            fclose(file)
            unlink(temporaryPath)
        } else {
            fclose(file)
        }
    }
}
