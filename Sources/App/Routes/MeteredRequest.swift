import Core
import Hummingbird
import JSONKit
import NIOCore
import NIOPosix

/// What every metered handler reads first: the caller, and the body (within the limit) parsed
/// once. Failures are the caller's dialect's 400/401/413.
struct MeteredRequest: Sendable {
    let principal: Principal
    let root: JSONValue
    let bodyBytes: Int

    /// Bodies larger than this are parsed on a thread pool, so a big one never holds up an
    /// event loop (and the requests on it).
    static let inlineParseLimit = 64 << 10

    static func read(_ request: Request, _ context: GatewayContext, limit: Int) async throws -> MeteredRequest {
        guard let principal = context.principal else { throw GatewayError.missingKey }
        let body = try await readRequestBody(request, limit: limit)
        let bytes = Array(buffer: body)
        let document: JSONDocument
        do {
            if bytes.count <= inlineParseLimit {
                document = try JSONDocument.parse(bytes, limits: .request)
            } else {
                document = try await NIOThreadPool.singleton.runIfActive { try JSONDocument.parse(bytes, limits: .request) }
            }
        } catch let error as JSONError {
            throw GatewayError.invalidRequest(message(error))
        }
        guard document.root.kind == .object else { throw GatewayError.invalidRequest("request body must be a JSON object") }
        return MeteredRequest(principal: principal, root: document.root, bodyBytes: bytes.count)
    }

    static func message(_ error: JSONError) -> String {
        switch error.reason {
        case .empty: "missing request body"
        case .syntax, .invalidUTF8: "invalid JSON in request body"
        case .tooDeep(let depth): "request body is nested deeper than \(depth) levels"
        case .tooLarge: "request body is too large to parse"
        case .duplicateKey(let key): "duplicate key '\(key)' in request body (keys are compared ignoring case)"
        }
    }

    /// The `model` member, which must be a string.
    func model(missing: String) throws(GatewayError) -> String {
        guard let model = root["model"]?.string, !model.isEmpty else { throw .invalidRequest(missing) }
        return model
    }
}

/// Reads a request body up to the configured limit (413 beyond).
func readRequestBody(_ request: Request, limit: Int) async throws -> ByteBuffer {
    do {
        return try await request.body.collect(upTo: limit)
    } catch is NIOTooManyBytesError {
        throw GatewayError.bodyTooLarge(limit: limit)
    }
}
