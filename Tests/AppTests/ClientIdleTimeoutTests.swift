#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import App
import Core
import FakeUpstream
import Foundation
import Testing

/// CLIENT_IDLE_TIMEOUT_SECONDS: idle keep-alive connections and requests that stop arriving are
/// closed; responses being written, streams included, never are.
@Suite("Gateway: client idle timeout")
struct ClientIdleTimeoutTests {
    /// A blocking loopback connection to `port` whose reads give up after `readTimeout` seconds,
    /// so a server that never closes fails the test instead of hanging it.
    func connect(port: Int, readTimeout: Int = 10) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var timeout = timeval(tv_sec: readTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(connected == 0)
        return fd
    }

    func send(_ fd: Int32, _ text: String) throws {
        let sent = text.utf8CString.withUnsafeBufferPointer { Glibc.send(fd, $0.baseAddress, $0.count - 1, 0) }
        try #require(sent == text.utf8.count)
    }

    /// Reads until the server closes the connection (recv returns 0), returning what came and how
    /// long it took; nil if the read timed out first (the server kept the connection open).
    func readUntilClosed(_ fd: Int32) -> (text: String, seconds: Double)? {
        let start = ContinuousClock.now
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            if count < 0 { return nil }
            bytes += chunk[..<count]
        }
        let elapsed = ContinuousClock.now - start
        return (String(decoding: bytes, as: UTF8.self), Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    @Test func anIdleKeepAliveConnectionIsClosedAfterTheTimeout() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"]) { h in
            let fd = try connect(port: h.gatewayPort)
            defer { close(fd) }
            try send(fd, "GET /health HTTP/1.1\r\nHost: lmsvr\r\n\r\n")
            // The answer arrives at once; the connection is then kept alive, idle, until the timeout.
            let result = try #require(readUntilClosed(fd), "the idle connection was never closed")
            #expect(result.text.hasPrefix("HTTP/1.1 200"))
            #expect(result.seconds >= 0.9)
        }
    }

    @Test func aRequestThatStopsArrivingMidHeadIsCutOff() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"]) { h in
            let (_, key) = try await h.customer(budgetNanos: nil)
            let fd = try connect(port: h.gatewayPort)
            defer { close(fd) }
            // Slowloris: a head that is never finished holds the connection only as long as the timeout.
            try send(fd, "POST /api/chat HTTP/1.1\r\nHost: lmsvr\r\nAuthorization: Bearer \(key)\r\nContent-Le")
            let result = try #require(readUntilClosed(fd), "the stalled request was never cut off")
            #expect(result.seconds >= 0.9)
            #expect(try await h.ledger().isEmpty)
        }
    }

    @Test func aRequestWhoseBodyStopsArrivingIsCutOffUnbilled() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"]) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let fd = try connect(port: h.gatewayPort)
            defer { close(fd) }
            try send(fd, "POST /api/chat HTTP/1.1\r\nHost: lmsvr\r\nAuthorization: Bearer \(key)\r\n"
                + "Content-Type: application/json\r\nContent-Length: \(chatBody.utf8.count)\r\n\r\n"
                + String(chatBody.prefix(20)))
            let result = try #require(readUntilClosed(fd), "the stalled body was never cut off")
            #expect(result.seconds >= 0.9)
            // Never priced, never held, never sent upstream.
            #expect(h.fake.recorder.lastBody("/api/chat") == nil)
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    @Test func aStreamLongerThanTheTimeoutToAClientThatSendsNothingIsDeliveredAndBilled() async throws {
        var upstream = FakeUpstream.Options()
        upstream.chunks = 4
        upstream.dripMillis = 800 // ~3 s of stream against a 1 s idle timeout
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"], upstreamOptions: upstream) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let r = try await h.stream("/api/chat", key: key, json: #"{"model":"slowstream","messages":[]}"#)
            #expect(r.status == 200)
            #expect(try ndjsonLines(r.body).last?["done"] as? Bool == true)
            #expect(try await eventually { try await h.ledger().count == 1 })
            #expect(try await h.ledger().first?.outcome == "ok")
            #expect(try await h.budget(customer).held == .zero)
        }
    }

    /// A model that takes longer to answer than the idle timeout (Ollama loading a large model):
    /// the request has been read, so the connection is not idle while the gateway waits.
    @Test func anUpstreamSlowerToAnswerThanTheTimeoutIsWaitedForAndBilled() async throws {
        var upstream = FakeUpstream.Options()
        upstream.slowSeconds = 2.5
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "1"], upstreamOptions: upstream) { h in
            let (customer, key) = try await h.customer(budgetNanos: 1_000_000_000)
            let r = try await h.send(.POST, "/api/chat", key: key, json: #"{"model":"slow","messages":[],"stream":false}"#)
            #expect(r.status == 200)
            #expect(try await eventually { try await h.ledger().count == 1 })
            #expect(try await h.ledger().first?.outcome == "ok")
            let status = try await h.budget(customer)
            #expect(status.held == .zero && status.spent > .zero)
        }
    }

    @Test func zeroKeepsIdleConnectionsOpen() async throws {
        try await GatewayHarness.with(environment: ["CLIENT_IDLE_TIMEOUT_SECONDS": "0"]) { h in
            let fd = try connect(port: h.gatewayPort, readTimeout: 2)
            defer { close(fd) }
            try send(fd, "GET /health HTTP/1.1\r\nHost: lmsvr\r\n\r\n")
            // Still open when the 2 s read timeout gives up.
            #expect(readUntilClosed(fd) == nil)
            #expect(try Configuration(environment: [:]).clientIdleTimeoutSeconds == 120)
        }
    }
}
