/// An API key as stored: never the key itself, only its hash and display prefix.
public struct KeyRecord: Sendable, Hashable, Codable {
    public var id: Int64
    public var customerId: Int64
    public var name: String?
    public var displayPrefix: String
    public var createdAtMicros: Int64
    public var revokedAtMicros: Int64?

    public init(id: Int64, customerId: Int64, name: String?, displayPrefix: String,
                createdAtMicros: Int64, revokedAtMicros: Int64?) {
        self.id = id
        self.customerId = customerId
        self.name = name
        self.displayPrefix = displayPrefix
        self.createdAtMicros = createdAtMicros
        self.revokedAtMicros = revokedAtMicros
    }

    public var isRevoked: Bool { revokedAtMicros != nil }
}

/// A key that was just created, with the plaintext that is shown exactly once.
public struct NewKey: Sendable {
    public var record: KeyRecord
    public var plaintext: String

    public init(record: KeyRecord, plaintext: String) {
        self.record = record
        self.plaintext = plaintext
    }
}

/// Who a request's key belongs to, as authentication resolves it.
public struct Principal: Sendable, Hashable {
    public var keyId: Int64
    public var customerId: Int64
    public var revoked: Bool

    public init(keyId: Int64, customerId: Int64, revoked: Bool) {
        self.keyId = keyId
        self.customerId = customerId
        self.revoked = revoked
    }
}
