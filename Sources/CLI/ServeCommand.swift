import App
import ArgumentParser
import Core
import Logging

struct Serve: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Run the gateway (SQLite is created and migrated on start).")

    @Option(help: "Address to listen on (default: HOST, then 0.0.0.0).") var host: String?
    @Option(help: "Port to listen on (default: PORT, then 8000).") var port: Int?
    @OptionGroup var database: DatabaseOptions

    func validate() throws {
        if let port, !(0...65535).contains(port) { throw CLIError.usage("--port \(port) is not a port number (0-65535)") }
    }

    func run() async throws {
        var configuration = try database.configuration()
        if let host { configuration.host = host }
        if let port { configuration.port = port }
        let logger = Logger(label: "lmsvr")
        let store = try await StoreOpener.open(configuration)
        do {
            try await Gateway.run(configuration: configuration, store: store, logger: logger)
        } catch {
            await store.close()
            throw error
        }
        await store.close()
    }
}
