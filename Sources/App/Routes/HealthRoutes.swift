import Core
import Foundation
import Hummingbird
import NIOCore

/// `GET /health` (process and database), `GET /health/live` (the process alone) and
/// `GET /health/ollama` (reachability, version, latency). None needs a key; `/health` and
/// `/health/ollama` answer 503 when what they check is down.
struct HealthRoutes: Sendable {
    let store: any Store
    let upstream: UpstreamClient
    let journal: SettleJournal
    let configuration: Configuration
    let ollama: OllamaPool

    func register(on router: Router<GatewayContext>) {
        router.get("/health") { _, _ in await database() }
        router.get("/health/ollama") { _, _ in await ollamaHealth() }
        // For liveness probes: a database outage must take a replica out of rotation (`/health`),
        // never get it restarted, which would cut its in-flight requests and its journal drain.
        router.get("/health/live") { _, _ in Self.json(.ok, ["status": "ok"]) }
    }

    /// 200 `ok`; 200 `degraded` while settles wait in the journal; 503 when the database cannot
    /// be reached (new requests are refused then), with the journal's depth and age either way.
    func database() async -> Response {
        let started = ContinuousClock.now
        var journalState: [String: Any] = ["depth": journal.depth, "path": journal.path]
        if let oldest = journal.oldestMicros { journalState["oldest_age_seconds"] = Double(nowMicros() - oldest) / 1_000_000 }
        do {
            try await store.ping()
            return Self.json(.ok, ["status": journal.isEmpty ? "ok" : "degraded", "database": "ok",
                                   "database_latency_ms": Double(started.microsecondsElapsed) / 1000,
                                   "journal": journalState])
        } catch {
            return Self.json(.serviceUnavailable, ["status": "degraded", "database": "unreachable", "journal": journalState])
        }
    }

    /// One server: 200 with its version and latency, or 503. Several: each server's state as the
    /// latest check found it (version, latency, models, loaded models, requests in flight,
    /// healthy), and 503 only when none is healthy.
    func ollamaHealth() async -> Response {
        if ollama.isSingle { return await single() }
        // The monitor's latest checks (at most OLLAMA_CHECK_INTERVAL_SECONDS old): a probe or a
        // stranger polling this cannot make the gateway call every server each time.
        await ollama.firstCheck()
        let servers = ollama.servers
        let healthy = servers.filter(\.healthy).count
        let list: [[String: Any]] = servers.map { s in
            var entry: [String: Any] = [
                "url": s.server.displayName, "weight": s.server.weight, "healthy": s.healthy, "in_flight": s.inFlight,
                "models": s.models.sorted(), "loaded": s.loaded.sorted(),
            ]
            if let version = s.version { entry["version"] = version }
            if let latency = s.latencyMicros { entry["latency_ms"] = Double(latency) / 1000 }
            if let error = s.error { entry["error"] = error }
            return entry
        }
        return Self.json(healthy > 0 ? .ok : .serviceUnavailable, [
            "status": healthy == servers.count ? "ok" : healthy > 0 ? "degraded" : "unavailable",
            "healthy": healthy, "servers": list,
        ])
    }

    func single() async -> Response {
        let started = ContinuousClock.now
        do {
            let response = try await upstream.send(method: .GET, url: configuration.ollamaBaseURL + "/api/version")
            let body = try await upstream.collect(response, limit: 1 << 16)
            let latency = Double(started.microsecondsElapsed) / 1000
            guard response.status.code == 200,
                  let object = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any]
            else {
                return Self.json(.serviceUnavailable, ["status": "unavailable", "error": "Ollama answered \(response.status.code)"])
            }
            return Self.json(.ok, ["status": "ok", "version": object["version"] ?? NSNull(), "latency_ms": latency])
        } catch {
            return Self.json(.serviceUnavailable, ["status": "unavailable", "error": error.message])
        }
    }

    static func json(_ status: HTTPResponse.Status, _ object: [String: Any]) -> Response {
        Response(status: status, headers: [.contentType: "application/json; charset=utf-8"],
                 body: .init(byteBuffer: JSONText.encode(object)))
    }
}
