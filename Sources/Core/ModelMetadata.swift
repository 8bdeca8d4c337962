/// What `sync-models` learned about a model from Ollama's `/api/show`.
public struct ModelMetadata: Sendable, Hashable, Codable {
    public var name: String
    public var family: String?
    public var parameterSize: String?
    public var quantization: String?
    public var contextLength: Int64?
    public var description: String?
    public var syncedAtMicros: Int64

    public init(name: String, family: String? = nil, parameterSize: String? = nil, quantization: String? = nil,
                contextLength: Int64? = nil, description: String? = nil, syncedAtMicros: Int64) {
        self.name = name
        self.family = family
        self.parameterSize = parameterSize
        self.quantization = quantization
        self.contextLength = contextLength
        self.description = description
        self.syncedAtMicros = syncedAtMicros
    }
}
