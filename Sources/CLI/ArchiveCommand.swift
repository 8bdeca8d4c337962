import ArgumentParser
import Core
import Foundation

struct ArchiveUsage: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "archive-usage",
        abstract: "Move the ledger rows of months before a month into a file, then drop them from the database.",
        discussion: """
            The file (CSV with a header, or JSON) is complete and on disk before anything is removed; \
            if writing it fails, the ledger is left as it was. Months are then removed one by one; \
            one that changed while it was written stays (the error names the months removed before \
            it). Reports and budgets are unchanged: \
            they read the per-day rollups, which stay. On PostgreSQL each month's partition is \
            dropped whole.
            """)

    @Option(help: "Archive the months before this one (YYYY-MM).") var before: String
    @Option(help: "The file to write (required: the rows leave the database).") var output: String
    @Option(help: "csv or json (default: csv).") var format: UsageExportFormat?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var json: OutputOptions

    var period: BudgetPeriod? {
        let parts = before.split(separator: "-")
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int(parts[0]), let month = Int(parts[1]),
              (1...12).contains(month) else { return nil }
        return BudgetPeriod(year: year, month: month)
    }

    func validate() throws {
        guard let period else { throw CLIError.usage("--before must be a month, YYYY-MM (got '\(before)')") }
        // The current month is still being written (and settles of requests that began in it may
        // arrive for a while after): only months that have ended can be archived.
        let current = BudgetPeriod(containingMicros: nowMicros())
        guard period <= current else {
            throw CLIError.usage("--before \(period) would archive the current month, \(current), which is still being written; "
                                 + "the latest is --before \(current)")
        }
        // An archive holds rows that are no longer anywhere else: never replace one.
        guard !FileManager.default.fileExists(atPath: output) else {
            throw CLIError.usage("\(output) exists; archive-usage never replaces a file (it may be an earlier archive)")
        }
    }

    func run() async throws {
        let period = self.period!
        let writer = try UsageFileWriter(path: output, format: format ?? .csv)
        let count: Int
        do {
            count = try await StoreOpener.with(try database.configuration()) { store in
                try await store.archiveUsage(before: period, { try writer.append($0) }, keep: { try writer.finish() })
            }
        } catch {
            writer.abandon()
            throw error
        }
        if json.json { return try Output.printJSON(ArchiveView(archived_rows: count, before: period.description, output: output)) }
        print("Archived \(count) ledger rows from before \(period) to \(output).")
    }
}

/// `archive-usage --json`.
struct ArchiveView: Encodable {
    var archived_rows: Int
    var before: String
    var output: String
}
