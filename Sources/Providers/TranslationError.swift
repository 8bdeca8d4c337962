/// A client request that cannot be carried to the upstream as it is: always a 400 in the
/// client's dialect, with the offending parameter when there is one.
public struct TranslationError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var param: String?

    public init(_ message: String, param: String? = nil) {
        self.message = message
        self.param = param
    }

    public var description: String { message }
}
