/// A customer: whoever holds API keys and pays for their use.
public struct Customer: Sendable, Hashable, Codable {
    public var id: Int64
    public var name: String
    public var email: String
    /// The monthly budget; `nil` means unlimited.
    public var monthlyBudget: Money?
    public var createdAtMicros: Int64
    /// Rate limits over all of the customer's keys together.
    public var limits: RateLimits

    public init(id: Int64, name: String, email: String, monthlyBudget: Money?, createdAtMicros: Int64,
                limits: RateLimits = .none) {
        self.id = id
        self.name = name
        self.email = email
        self.monthlyBudget = monthlyBudget
        self.createdAtMicros = createdAtMicros
        self.limits = limits
    }
}

/// Validation of what an operator types for a new customer.
public enum CustomerInput {
    /// Checks the shape of an email address: one `@`, a non-empty local part, a dotted domain,
    /// no spaces. Deliverability is not our business.
    public static func isPlausibleEmail(_ email: String) -> Bool {
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, email.count <= 254,
              !email.contains(where: { $0.isWhitespace || $0.isNewline }) else { return false }
        let domain = parts[1]
        let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
        return labels.count >= 2 && labels.allSatisfy { !$0.isEmpty }
    }
}
