import Foundation
import ArgumentParser
import Core

struct CreateCustomer: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "create-customer", abstract: "Create a customer, with an optional monthly budget in USD.")

    @Argument(help: "The customer's name.") var name: String
    @Argument(help: "The customer's email address (unique).") var email: String
    @Option(parsing: .unconditional, help: "Monthly budget in USD, e.g. 100.0 (default: unlimited).") var budget: String?
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if name.trimmingCharacters(in: .whitespaces).isEmpty { throw CLIError.usage("the name must not be empty") }
        if !CustomerInput.isPlausibleEmail(email) {
            throw CLIError.usage("'\(email)' is not an email address (expected name@example.com)")
        }
        if let budget { _ = try parseMoney(budget, "--budget") }
    }

    func run() async throws {
        let budget = try self.budget.map { try parseMoney($0, "--budget") }
        let customer = try await StoreOpener.with(try database.configuration()) {
            try await $0.createCustomer(name: name, email: email, monthlyBudget: budget, nowMicros: nowMicros())
        }
        if output.json { return try Output.printJSON(CustomerView(customer)) }
        print("Created customer \(customer.id): \(customer.name) <\(customer.email)>, monthly budget \(customer.monthlyBudget?.description ?? "unlimited").")
    }
}

struct ListCustomers: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "list-customers", abstract: "List customers with their budget and this month's spend.")

    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let period = BudgetPeriod(containingMicros: nowMicros())
        let rows = try await StoreOpener.with(try database.configuration()) { store in
            var rows: [(Customer, BudgetStatus?)] = []
            for customer in try await store.listCustomers() {
                rows.append((customer, try await store.budgetStatus(customerId: customer.id, period: period)))
            }
            return rows
        }
        if output.json {
            struct Row: Encodable {
                var customer: CustomerView
                var budget: BudgetView?
                func encode(to encoder: Encoder) throws {
                    try customer.encode(to: encoder)
                    var c = encoder.container(keyedBy: Key.self)
                    try c.encode(budget?.spent_usd ?? "0.00", forKey: .spent_this_month_usd)
                    try c.encode(budget?.period, forKey: .period)
                }
                enum Key: CodingKey { case spent_this_month_usd, period }
            }
            return try Output.printJSON(rows.map { Row(customer: CustomerView($0.0), budget: $0.1.map { BudgetView($0) }) })
        }
        if rows.isEmpty { return print("No customers yet. Create one with: lmsvr create-customer NAME EMAIL --budget USD") }
        Output.printTable(
            ["ID", "NAME", "EMAIL", "MONTHLY BUDGET", "SPENT \(period)", "CREATED (UTC)"],
            rows.map { c, s in
                [String(c.id), c.name, c.email, c.monthlyBudget?.description ?? "unlimited",
                 (s?.spent ?? .zero).description, Timestamp.short(micros: c.createdAtMicros)]
            },
            rightAligned: [0, 3, 4])
    }
}

struct SetBudget: AsyncParsableCommand, DatabaseCommand {
    static let configuration = CommandConfiguration(
        commandName: "set-budget", abstract: "Change a customer's monthly budget (USD, or 'unlimited').")

    @Argument(help: "The customer's id.") var customerId: Int64
    @Argument(help: "Monthly budget in USD, or 'unlimited'.") var budget: String
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if budget.lowercased() != "unlimited" { _ = try parseMoney(budget, "budget") }
    }

    func run() async throws {
        let amount = budget.lowercased() == "unlimited" ? nil : try parseMoney(budget, "budget")
        guard let customer = try await StoreOpener.with(try database.configuration(), {
            try await $0.setBudget(customerId: customerId, monthlyBudget: amount)
        }) else { throw CLIError.operational("no customer with id \(customerId)") }
        if output.json { return try Output.printJSON(CustomerView(customer)) }
        print("Customer \(customer.id) (\(customer.name)): monthly budget now \(customer.monthlyBudget?.description ?? "unlimited").")
    }
}
