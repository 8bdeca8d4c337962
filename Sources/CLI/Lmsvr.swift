import ArgumentParser
import Core
import EventLoopExecutor
import Foundation

/// The `lmsvr` command: the gateway (`serve`) and its administration.
@main
struct Lmsvr: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lmsvr",
        abstract: "An API gateway for Ollama with API keys, exact per-model pricing, hard budgets and a usage ledger.",
        subcommands: [
            Serve.self, Migrate.self,
            CreateCustomer.self, ListCustomers.self, SetBudget.self,
            GenerateKey.self, RotateKey.self, RevokeKey.self, ListKeys.self, SetScopes.self, SetLimits.self,
            SetPricing.self, ListPricing.self, ListModels.self, SyncModels.self,
            CheckBudget.self, UsageReportCommand.self, ExportUsage.self, ArchiveUsage.self,
        ])

    /// Parses and runs, mapping every failure to one line on stderr and the contract's exit
    /// status: 0 success, 1 operational failure, 2 usage error.
    static func main() async {
        if CommandLine.arguments.dropFirst().first == "serve" {
            EventLoopSizing.matchUsableCPUs()
            AllocatorTuning.keepFreedMemoryForReuse()
            // Run Swift Concurrency's jobs on NIO's event loops instead of Dispatch's pool: a
            // request then no longer hops between the loop that owns its socket and another
            // thread at every await, and runs them as the generic executor, so the hops between
            // nonisolated async functions stay inline (see docs/benchmarks.md). Blocking work
            // never runs on these threads: SQLite and libpq have their own. Must happen before
            // any task is created; `serve` logs which executor it got.
            GlobalExecutorOnEventLoops.install()
        }
        let command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                terminate(0)
            }
            if let error = error as? CLIError {
                Output.printError(error.description)
                terminate(error.exitCode)
            }
            let message = self.message(for: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? "invalid arguments"
            Output.printError("\(message.replacingOccurrences(of: "Error: ", with: "")) (see 'lmsvr --help')")
            terminate(2)
        }
        do {
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                var command = command
                try command.run()
            }
            terminate(0)
        } catch let error as ExitCode {
            terminate(error.rawValue)
        } catch {
            // The root command's own run() asks for help; argument-parser's errors keep their meaning.
            if !(error is CLIError), exitCode(for: error) == .success {
                print(fullMessage(for: error))
                terminate(0)
            }
            let database = (command as? DatabaseCommand).flatMap { try? $0.database.configuration().database.redacted }
            let failure = CLIError.from(error, database: database)
            Output.printError(failure.description)
            terminate(failure.exitCode)
        }
    }
}

/// A command that reaches the database, so errors can name it (redacted).
protocol DatabaseCommand {
    var database: DatabaseOptions { get }
}

/// Ends the process with a status (stdio buffers are flushed by `exit`).
func terminate(_ code: Int32) -> Never {
    Foundation.exit(code)
}
