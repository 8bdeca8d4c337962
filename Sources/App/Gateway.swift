import Core
import Hummingbird
import Logging

/// The HTTP gateway: builds the application around a store and runs it until SIGTERM/SIGINT.
public enum Gateway {
    public static func run(configuration: Configuration, store: any Store, logger: Logger) async throws {
        let router = Router()
        router.get("/health") { _, _ -> Response in
            do {
                try await store.ping()
                return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: #"{"status":"ok","database":"ok"}"#)))
            } catch {
                return Response(status: .serviceUnavailable,
                                body: .init(byteBuffer: ByteBuffer(string: #"{"status":"error","database":"unavailable"}"#)))
            }
        }
        let app = Application(router: router,
                              configuration: .init(address: .hostname(configuration.host, port: configuration.port)),
                              logger: logger)
        try await app.runService()
    }
}
