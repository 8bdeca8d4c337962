import App
import ArgumentParser
import Core
import EventLoopExecutor
import Logging
import NIOPosix
import PGStore
import SQLiteStore

struct Serve: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the gateway (SQLite is created and migrated on start).")

    @Option(help: "Address to listen on (default: HOST, then 0.0.0.0).") var host: String?
    @Option(help: "Port to listen on (default: PORT, then 8000).") var port: Int?
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw CLIError.usage("--port \(port) is not a port number (0-65535)") }
    }

    /// Where Swift Concurrency's jobs run, for the start-up line: a gateway that lost the
    /// takeover (another library installed its hook first) still works, at a higher CPU cost.
    static var executorDescription: String {
        guard GlobalExecutorOnEventLoops.isInstalled else { return "dispatch" }
        let loops = MultiThreadedEventLoopGroup.singleton.makeIterator().reduce(0) { count, _ in count + 1 }
        return "event loops (\(loops)), generic"
    }

    func run() async throws {
        var configuration = try database.configuration()
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        LogOutput.bootstrap(configuration)
        if let missing = configuration.missingDirectURL { throw ConfigurationError(variable: "DATABASE_DIRECT_URL", message: missing) }
        let logger = Logger(label: "lmsvr")
        let store = try await StoreOpener.open(configuration)
        let journal: SettleJournal
        do {
            journal = try SettleJournal(directory: configuration.journalDirectory, maxBytes: configuration.journalMaxBytes,
                                        logger: logger)
        } catch {
            await store.close()
            throw CLIError.operational(error.description)
        }
        let upstream = UpstreamClient(configuration: configuration)
        logger.notice("starting", metadata: [
            "database": "\(configuration.database.redacted)", "ollama": "\(configuration.ollamaServerNames)",
            "address": "\(configuration.host):\(configuration.port)", "journal": "\(journal.path)",
            "executor": "\(Self.executorDescription)",
        ])
        let gateway = Gateway(configuration: configuration, store: store, upstream: upstream, journal: journal, logger: logger)
        // Charges a previous run could not write (it crashed, or stopped during an outage) go to
        // the database before this one serves.
        let adopted = try await journal.adoptOrphans()
        if !adopted.isEmpty {
            let written = await gateway.replayJournal()
            logger.notice("replayed the settle journal", metadata: ["adopted": "\(adopted.count)", "written": "\(written)"])
        }
        // A change feed drives the key and price caches (which stay off while it is down): on
        // PostgreSQL a dedicated connection LISTENs for what other processes commit; on SQLite a
        // watcher polls the file's data version, which only other processes' commits move.
        var listener: PGListener?
        var feedTask: Task<Void, Never>?
        if let conninfo = configuration.directConninfo {
            let pgListener = PGListener(conninfo: conninfo, logger: logger)
            pgListener.start { [cache = gateway.cache] in cache.handle($0) }
            listener = pgListener
            // Proves the listener hears the writers, so idle keys and prices stay cached.
            let confirmer = ChangeConfirmer(cache: gateway.cache, store: store, listening: { pgListener.hearsDirectly }, logger: logger)
            feedTask = Task { await confirmer.run() }
        } else if let database = (store as? SQLiteStore)?.database {
            feedTask = Task { [cache = gateway.cache] in await SQLiteChangeWatcher(database: database).run { cache.handle($0) } }
        }
        do {
            try await gateway.run()
        } catch {
            feedTask?.cancel()
            listener?.stop()
            await upstream.shutdown()
            await journal.shutdown()
            await store.close()
            throw error
        }
        feedTask?.cancel()
        listener?.stop()
        await upstream.shutdown()
        await journal.shutdown()
        await store.close()
        logger.notice("stopped")
    }
}
