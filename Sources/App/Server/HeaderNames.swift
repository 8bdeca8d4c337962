import HTTPTypes

extension HTTPField.Name {
    static let xRequestId = HTTPField.Name("x-request-id")!
    static let xAPIKey = HTTPField.Name("x-api-key")!
    static let anthropicVersion = HTTPField.Name("anthropic-version")!
}

extension HTTPField.Name {
    static let anthropicBeta = HTTPField.Name("anthropic-beta")!
}
