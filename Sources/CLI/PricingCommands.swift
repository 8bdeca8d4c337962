import ArgumentParser
import Core

struct SetPricing: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-pricing",
        abstract: "Set a model's prices (USD) from now on; earlier requests keep the prices they were charged.")

    @Argument(help: "The model name, e.g. llama3 or llama3:8b (stored as Ollama resolves it: library/llama3:latest is llama3).")
    var model: String
    @Argument(help: "Flat price per request in USD.") var perRequest: String
    @Argument(help: "Flat per-model surcharge per request in USD.") var perModel: String
    @Option(name: .customLong("input-per-1m"), parsing: .unconditional, help: "USD per 1M prompt tokens.") var inputPer1M: String?
    @Option(name: .customLong("output-per-1m"), parsing: .unconditional, help: "USD per 1M completion tokens.") var outputPer1M: String?
    @Option(name: .customLong("cached-input-per-1m"), parsing: .unconditional, help: "USD per 1M cached prompt tokens (default: the input price).")
    var cachedInputPer1M: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func price() throws -> ModelPrice {
        ModelPrice(perRequest: try parseMoney(perRequest, "per_request"), perModel: try parseMoney(perModel, "per_model"),
                   inputPer1M: try inputPer1M.map { try parseMoney($0, "--input-per-1m") } ?? .zero,
                   outputPer1M: try outputPer1M.map { try parseMoney($0, "--output-per-1m") } ?? .zero,
                   cachedInputPer1M: try cachedInputPer1M.map { try parseMoney($0, "--cached-input-per-1m") })
    }

    func validate() throws {
        if model.trimmingWhitespaceAndNewlines().isEmpty || model.utf8.count > ModelName.maxBytes {
            throw CLIError.usage("the model name must be 1 to \(ModelName.maxBytes) bytes")
        }
        _ = try price()
    }

    /// The name requests are priced by: an Ollama reference in the form Ollama resolves it to
    /// (what the gateway looks up), anything else (a provider's fine-tune id) as written.
    var normalisedModel: String { (try? ModelName.ollama(model)) ?? model.trimmingWhitespaceAndNewlines() }

    func run() async throws {
        let price = try self.price()
        let model = normalisedModel
        let record = try await StoreOpener.with(try database.configuration()) {
            try await $0.setPrice(model: model, price: price, effectiveFromMicros: nowMicros())
        }
        if output.json { return try Output.printJSON(PriceView(record)) }
        var parts = ["\(price.perRequest) per request", "\(price.perModel) per-model fee"]
        if price.inputPer1M.nanos > 0 { parts.append("\(price.inputPer1M) per 1M input tokens") }
        if price.outputPer1M.nanos > 0 { parts.append("\(price.outputPer1M) per 1M output tokens") }
        if let cached = price.cachedInputPer1M { parts.append("\(cached) per 1M cached input tokens") }
        print("Pricing for \(model) from \(Timestamp.short(micros: record.effectiveFromMicros)) UTC: \(parts.joined(separator: ", ")).")
    }
}

struct ListPricing: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-pricing", abstract: "List the prices in force for every model that has a price row.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let prices = try await StoreOpener.with(try database.configuration()) { try await $0.currentPrices(atMicros: nowMicros()) }
        if output.json { return try Output.printJSON(prices.map(PriceView.init)) }
        if prices.isEmpty { return print("No prices set: every model costs the default price per request.") }
        Output.printTable(
            ["MODEL", "PER REQUEST", "PER MODEL", "INPUT/1M", "OUTPUT/1M", "SINCE (UTC)"],
            prices.map {
                [$0.model, $0.price.perRequest.description, $0.price.perModel.description,
                 $0.price.inputPer1M.description, $0.price.outputPer1M.description,
                 Timestamp.short(micros: $0.effectiveFromMicros)]
            },
            rightAligned: [1, 2, 3, 4])
    }
}

extension String {
    func trimmingWhitespaceAndNewlines() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
