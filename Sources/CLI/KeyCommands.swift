import ArgumentParser
import Core

struct GenerateKey: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-key", abstract: "Create an API key for a customer. The key is shown once.")

    @Argument(help: "The customer's id.") var customerId: Int64
    @Option(help: "A label for the key, e.g. 'ci' or 'laptop'.") var name: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard let key = try await StoreOpener.with(try database.configuration(), {
            try await $0.createKey(customerId: customerId, name: name, nowMicros: nowMicros())
        }) else { throw CLIError.operational("no customer with id \(customerId)") }
        if output.json { return try Output.printJSON(KeyView(key.record, plaintext: key.plaintext)) }
        print("Created key \(key.record.id) for customer \(customerId)\(name.map { " (\($0))" } ?? ""):")
        print("")
        print("    \(key.plaintext)")
        print("")
        print("Store it now: it cannot be shown again (only its hash is kept).")
    }
}

struct RevokeKey: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "revoke-key", abstract: "Revoke an API key; it is refused from then on and kept for the audit trail.")

    @Argument(help: "The key's id (see list-keys).") var keyId: Int64
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard let key = try await StoreOpener.with(try database.configuration(), {
            try await $0.revokeKey(id: keyId, nowMicros: nowMicros())
        }) else { throw CLIError.operational("no key with id \(keyId)") }
        if output.json { return try Output.printJSON(KeyView(key)) }
        print("Revoked key \(key.id) (\(key.displayPrefix)…) of customer \(key.customerId) at \(Timestamp.short(micros: key.revokedAtMicros ?? 0)) UTC.")
    }
}

struct ListKeys: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-keys", abstract: "List a customer's API keys (prefixes only), revoked ones included.")

    @Argument(help: "The customer's id.") var customerId: Int64
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let keys = try await StoreOpener.with(try database.configuration()) { store -> [KeyRecord] in
            guard try await store.customer(id: customerId) != nil else {
                throw CLIError.operational("no customer with id \(customerId)")
            }
            return try await store.listKeys(customerId: customerId)
        }
        if output.json { return try Output.printJSON(keys.map { KeyView($0) }) }
        if keys.isEmpty { return print("Customer \(customerId) has no keys. Create one with: lmsvr generate-key \(customerId)") }
        Output.printTable(
            ["ID", "PREFIX", "NAME", "CREATED (UTC)", "STATUS"],
            keys.map {
                [String($0.id), $0.displayPrefix + "…", $0.name ?? "", Timestamp.short(micros: $0.createdAtMicros),
                 $0.revokedAtMicros.map { "revoked \(Timestamp.short(micros: $0))" } ?? "active"]
            },
            rightAligned: [0])
    }
}
