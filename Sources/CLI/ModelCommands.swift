import App
import ArgumentParser
import Core
import Foundation

struct ListModels: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-models",
        abstract: "List the models Ollama serves and every priced model, with its pricing status.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let (entries, ollamaError) = try await withModelCatalog(database) { try await $0.listing() }
        if let ollamaError {
            // One line, and the models anyway: exit 0, the listing is what was asked for.
            FileHandle.standardError.write(Data(
                "warning: could not reach Ollama at \(ollamaError); listing what the other servers serve and every priced model\n".utf8))
        }
        if output.json { return try Output.printJSON(entries.map { ModelView($0) }) }
        Output.printTable(
            ["MODEL", "OLLAMA", "PRICING", "PER REQUEST", "PER MODEL", "INPUT/1M", "OUTPUT/1M", "CONTEXT"],
            entries.map {
                [$0.name, $0.servedByOllama ? (($0.tag?["servers"] as? [String])?.joined(separator: " ") ?? "served") : "not served",
                 $0.priceSource == .configured ? "priced" : "default price", $0.price.perRequest.description,
                 $0.price.perModel.description, $0.price.inputPer1M.description, $0.price.outputPer1M.description,
                 $0.metadata?.contextLength.map(String.init) ?? ""]
            },
            rightAligned: [3, 4, 5, 6, 7])
    }
}

struct SyncModels: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync-models",
        abstract: "Store each Ollama model's family, size, quantization and context window (from /api/show).")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let configuration = try database.configuration()
        let synced = try await withModelCatalog(database) { try await $0.sync() }
        if output.json { return try Output.printJSON(synced.map(MetadataView.init)) }
        print("Synced \(synced.count) model(s) from \(configuration.ollamaServerNames).")
        Output.printTable(["MODEL", "FAMILY", "PARAMETERS", "QUANTIZATION", "CONTEXT"], synced.map {
            [$0.name, $0.family ?? "", $0.parameterSize ?? "", $0.quantization ?? "", $0.contextLength.map(String.init) ?? ""]
        }, rightAligned: [4])
    }
}

/// Runs `body` with the model catalog (Ollama client and store), closing both afterwards and
/// turning an unreachable Ollama into one actionable line.
func withModelCatalog<T>(_ database: DatabaseOptions, _ body: (ModelCatalog) async throws -> T) async throws -> T {
    let configuration = try database.configuration()
    let upstream = UpstreamClient(configuration: configuration)
    do {
        let result = try await StoreOpener.with(configuration) { store in
            try await body(ModelCatalog(upstream: upstream, store: store, configuration: configuration))
        }
        await upstream.shutdown()
        return result
    } catch let error as GatewayError {
        await upstream.shutdown()
        throw CLIError.operational("cannot use Ollama at \(configuration.ollamaServerNames): \(error.message)")
    } catch {
        await upstream.shutdown()
        throw error
    }
}

struct MetadataView: Encodable {
    var name: String
    var family: String?
    var parameter_size: String?
    var quantization: String?
    var context_length: Int64?
    var description: String?

    init(_ m: ModelMetadata) {
        name = m.name
        family = m.family
        parameter_size = m.parameterSize
        quantization = m.quantization
        context_length = m.contextLength
        description = m.description
    }
}

struct ModelView: Encodable {
    var name: String
    var served_by_ollama: Bool
    /// The Ollama servers that list it.
    var servers: [String]
    var pricing_source: String
    var per_request_usd: String
    var per_model_usd: String
    var input_per_1m_usd: String
    var output_per_1m_usd: String
    var metadata: MetadataView?

    init(_ e: ModelCatalog.Entry) {
        name = e.name
        served_by_ollama = e.servedByOllama
        servers = (e.tag?["servers"] as? [String]) ?? []
        pricing_source = e.priceSource.rawValue
        per_request_usd = e.price.perRequest.decimalString
        per_model_usd = e.price.perModel.decimalString
        input_per_1m_usd = e.price.inputPer1M.decimalString
        output_per_1m_usd = e.price.outputPer1M.decimalString
        metadata = e.metadata.map(MetadataView.init)
    }
}
