import ArgumentParser
import Core
import Foundation

struct GenerateKey: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-key", abstract: "Create an API key for a customer. The key is shown once.")

    @Argument(help: "The customer's id.") var customerId: Int64
    @Option(help: "A label for the key, e.g. 'ci' or 'laptop'.") var name: String?
    @Option(help: "Expire after this long: 90m, 12h, 30d or 2w.") var expiresIn: String?
    @Option(help: "Expire at this UTC date or time: 2027-01-31 or 2027-01-31T18:00:00Z.") var expiresAt: String?
    @Option(help: "API families the key may call, comma-separated: ollama, openai, anthropic (default: all).") var apis: String?
    @Option(help: "Models the key may use, comma-separated globs, e.g. 'llama3*,gpt-4o-mini' (default: all).") var models: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let now = nowMicros()
        var options = KeyOptions(name: name)
        switch (expiresIn, expiresAt) {
        case (.some, .some): throw CLIError.usage("give --expires-in or --expires-at, not both")
        case (let span?, nil): options.expiresAtMicros = now + (try KeyTime.span(span, option: "--expires-in"))
        case (nil, let date?):
            let at = try KeyTime.instant(date)
            guard at > now else { throw CLIError.usage("--expires-at \(date) is in the past") }
            options.expiresAtMicros = at
        case (nil, nil): break
        }
        options.scope = KeyScope(apis: try apis.map(KeyTime.apis), models: try models.map(KeyTime.models))
        guard let key = try await StoreOpener.with(try database.configuration(), {
            try await $0.createKey(customerId: customerId, options: options, nowMicros: now)
        }) else { throw CLIError.operational("no customer with id \(customerId)") }
        if output.json { return try Output.printJSON(KeyView(key.record, plaintext: key.plaintext)) }
        print("Created key \(key.record.id) for customer \(customerId)\(name.map { " (\($0))" } ?? ""):")
        print("")
        print("    \(key.plaintext)")
        print("")
        if let expires = key.record.expiresAtMicros { print("It expires at \(Timestamp.short(micros: expires)) UTC.") }
        print("Store it now: it cannot be shown again (only its hash is kept).")
    }
}

struct RotateKey: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Give a key a new secret; the old one keeps working for the grace period. Limits, scopes and usage stay with the key.")

    @Argument(help: "The key's id (see list-keys).") var keyId: Int64
    @Option(help: "How long the old secret keeps working: 0, 90m, 24h, 7d (default: 24h).") var grace: String = "24h"
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let graceMicros = try KeyTime.span(grace, option: "--grace", allowZero: true)
        let key = try await StoreOpener.with(try database.configuration()) { store -> NewKey in
            guard let existing = try await store.key(id: keyId) else { throw CLIError.operational("no key with id \(keyId)") }
            guard !existing.isRevoked else { throw CLIError.operational("key \(keyId) is revoked; generate a new key instead") }
            guard let key = try await store.rotateKey(id: keyId, graceMicros: graceMicros, nowMicros: nowMicros()) else {
                throw CLIError.operational("key \(keyId) was revoked meanwhile")
            }
            return key
        }
        if output.json { return try Output.printJSON(KeyView(key.record, plaintext: key.plaintext)) }
        print("Rotated key \(key.record.id) of customer \(key.record.customerId). Its new secret:")
        print("")
        print("    \(key.plaintext)")
        print("")
        let until = key.record.previousExpiresAtMicros.map { Timestamp.short(micros: $0) + " UTC" } ?? "now"
        print("The old secret works until \(until). Store the new one now: it cannot be shown again.")
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
        commandName: "list-keys", abstract: "List a customer's API keys (prefixes only) with expiry, last use, scopes and limits.")

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
        let now = nowMicros()
        Output.printTable(
            ["ID", "PREFIX", "NAME", "CREATED (UTC)", "STATUS", "EXPIRES (UTC)", "LAST USED (UTC)", "SCOPE", "LIMITS"],
            keys.map { key in
                let status = key.revokedAtMicros.map { "revoked \(Timestamp.short(micros: $0))" }
                    ?? (key.isExpired(atMicros: now) ? "expired" : "active")
                let scope = [key.scope.apisText.map { "apis=\($0)" }, key.scope.modelsText.map { "models=\($0)" }]
                    .compactMap { $0 }.joined(separator: " ")
                return [String(key.id), key.displayPrefix + "…", key.name ?? "", Timestamp.short(micros: key.createdAtMicros),
                        status, key.expiresAtMicros.map { Timestamp.short(micros: $0) } ?? "never",
                        key.lastUsedAtMicros.map { Timestamp.short(micros: $0) } ?? "-", scope.isEmpty ? "all" : scope,
                        LimitText.describe(key.limits, budget: key.monthlyBudget)]
            },
            rightAligned: [0])
    }
}

struct SetScopes: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-scopes", abstract: "Change which API families and models a key may use ('none' lifts a restriction).")

    @Argument(help: "The key's id (see list-keys).") var keyId: Int64
    @Option(help: "API families, comma-separated (ollama, openai, anthropic), or 'none' for all.") var apis: String?
    @Option(help: "Model globs, comma-separated (e.g. 'llama3*,gpt-4o-mini'), or 'none' for all.") var models: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard apis != nil || models != nil else { throw CLIError.usage("give --apis, --models or both") }
        let apiChange: Set<APIFamily>?? = try apis.map { $0 == "none" ? nil : try KeyTime.apis($0) }
        let modelChange: [String]?? = try models.map { $0 == "none" ? nil : try KeyTime.models($0) }
        guard let key = try await StoreOpener.with(try database.configuration(), {
            try await $0.setKeyScope(id: keyId, apis: apiChange, models: modelChange)
        }) else { throw CLIError.operational("no key with id \(keyId)") }
        if output.json { return try Output.printJSON(KeyView(key)) }
        print("Key \(key.id): apis \(key.scope.apisText ?? "all"), models \(key.scope.modelsText ?? "all").")
    }
}

struct SetLimits: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-limits",
        abstract: "Set a key's or a customer's rate limits (and a key's own monthly budget); 'none' clears one.",
        discussion: "Limits hold across every replica: they are checked in the database, in the same step as the budget.")

    @Argument(help: "The key's id (or give --customer).") var keyId: Int64?
    @Option(help: "Set the customer's limits instead of a key's.") var customer: Int64?
    @Option(help: "Requests per minute, or 'none'.") var rpm: String?
    @Option(help: "Tokens per minute (prompt + output bound while in flight, actual after), or 'none'.") var tpm: String?
    @Option(help: "Requests in flight at once, or 'none'.") var concurrency: String?
    @Option(help: "The key's own monthly budget in USD, inside its customer's, or 'none' (keys only).") var budget: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard (keyId == nil) != (customer == nil) else { throw CLIError.usage("give a key id or --customer ID, not both") }
        var change = LimitChange()
        change.requestsPerMinute = try rpm.map { try LimitText.limit($0, option: "--rpm") }
        change.tokensPerMinute = try tpm.map { try LimitText.limit($0, option: "--tpm") }
        change.concurrency = try concurrency.map { try LimitText.limit($0, option: "--concurrency") }
        if let budget {
            guard customer == nil else { throw CLIError.usage("--budget is for keys; a customer's budget is set with set-budget") }
            change.monthlyBudget = budget == "none" ? .some(nil) : .some(try Money(parsing: budget))
        }
        guard !change.isEmpty else { throw CLIError.usage("give at least one of --rpm, --tpm, --concurrency, --budget") }
        let configuration = try database.configuration()
        if let customerId = customer {
            guard let updated = try await StoreOpener.with(configuration, { try await $0.setLimits(customerId: customerId, change) })
            else { throw CLIError.operational("no customer with id \(customerId)") }
            if output.json { return try Output.printJSON(CustomerView(updated)) }
            print("Customer \(updated.id) limits: \(LimitText.describe(updated.limits, budget: nil)).")
        } else if let keyId {
            guard let updated = try await StoreOpener.with(configuration, { try await $0.setLimits(keyId: keyId, change) })
            else { throw CLIError.operational("no key with id \(keyId)") }
            if output.json { return try Output.printJSON(KeyView(updated)) }
            print("Key \(updated.id) limits: \(LimitText.describe(updated.limits, budget: updated.monthlyBudget)).")
        }
    }
}
