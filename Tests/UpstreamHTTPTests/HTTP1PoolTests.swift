import Foundation
import NIOCore
import NIOPosix
import TestSupport
import Testing
@testable import UpstreamHTTP

/// The lean upstream client against a real loopback server that misbehaves on demand.
@Suite("HTTP/1.1 upstream pool")
struct HTTP1PoolTests {
    let group = MultiThreadedEventLoopGroup.singleton

    func withUpstream(maxConnections: Int = 8, idleConnectionTimeout: TimeAmount = .seconds(60),
                      _ body: (TestUpstream, HTTP1Pool) async throws -> Void) async throws {
        let upstream = try await TestUpstream(group: group)
        let pool = HTTP1Pool(host: "127.0.0.1", port: upstream.port, group: group, maxConnections: maxConnections,
                             connectTimeout: .seconds(30), idleConnectionTimeout: idleConnectionTimeout)
        do {
            try await body(upstream, pool)
        } catch {
            pool.shutdown()
            await upstream.stop()
            throw error
        }
        pool.shutdown()
        await upstream.stop()
    }

    /// Whether the upstream sees `count` connections closed within 30 seconds (a close takes a
    /// moment to cross the loopback, seconds when the whole suite runs at once on two cores).
    func closes(_ upstream: TestUpstream, count: Int) async throws -> Bool {
        for _ in 0..<1500 where upstream.snapshot.closed < count {
            try await Task.sleep(for: .milliseconds(20))
        }
        return upstream.snapshot.closed == count
    }

    func text(_ response: HTTP1Response, idle: TimeAmount = .seconds(30)) async throws -> String {
        var all = ""
        while let chunk = try await response.body.next(idleTimeout: idle) { all += String(buffer: chunk) }
        return all
    }

    /// Sequential requests share one kept-alive connection.
    @Test func keepsConnectionsAlive() async throws {
        try await withUpstream { upstream, pool in
            for _ in 0..<5 {
                let response = try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))
                #expect(response.status == .ok)
                #expect(try await text(response) == "hello")
            }
            #expect(upstream.snapshot.accepted == 1)
            #expect(upstream.snapshot.requests == 5)
        }
    }

    /// A body arrives whole and in order, chunk by chunk.
    @Test func streamsChunkedBodies() async throws {
        try await withUpstream { _, pool in
            let response = try await pool.execute(method: .POST, path: "/chunks?n=5&ms=5", body: ByteBuffer(string: "{}"),
                                                  headTimeout: .seconds(30))
            #expect(try await text(response) == "chunk-0;chunk-1;chunk-2;chunk-3;chunk-4;")
        }
    }

    /// An idle connection the upstream closes is dropped, and the next request still succeeds.
    @Test func idleConnectionsClosedByTheUpstreamAreNotUsed() async throws {
        try await withUpstream { upstream, pool in
            for round in 1...3 {
                let response = try await pool.execute(method: .GET, path: "/close-soon", headTimeout: .seconds(30))
                #expect(try await text(response) == "hello")
                // The upstream closes the idle connection; the pool notices without being used.
                let closed = try await closes(upstream, count: round)
                #expect(closed)
                for _ in 0..<1500 where pool.idleConnections > 0 { try await Task.sleep(for: .milliseconds(20)) }
                #expect(pool.idleConnections == 0)
            }
            #expect(upstream.snapshot.accepted == 3 && upstream.snapshot.requests == 3)
        }
    }

    /// A request the upstream received is never sent again, even on a reused connection it
    /// dropped (the upstream may be working on it); the caller learns it was dropped.
    @Test func aSentRequestIsNeverSentAgain() async throws {
        try await withUpstream { upstream, pool in
            let first = try await pool.execute(method: .POST, path: "/drop-second", body: ByteBuffer(string: "x"),
                                               headTimeout: .seconds(30))
            #expect(try await text(first) == "first")
            await #expect(throws: HTTP1ClientError.closedBeforeHead) {
                _ = try await pool.execute(method: .POST, path: "/drop-second", body: ByteBuffer(string: "x"), headTimeout: .seconds(30))
            }
            #expect(upstream.snapshot.requests == 2)
            await #expect(throws: HTTP1ClientError.closedBeforeHead) {
                _ = try await pool.execute(method: .GET, path: "/drop", headTimeout: .seconds(30))
            }
        }
    }

    /// Waiting for a connection counts towards the request's timeout; checks and listings
    /// (`beyondLimit`) never wait behind the requests that fill the pool.
    @Test func waitingForAConnectionIsBounded() async throws {
        try await withUpstream(maxConnections: 1) { upstream, pool in
            let holder = try await pool.execute(method: .GET, path: "/silent-after-first", headTimeout: .seconds(30))
            await #expect(throws: HTTP1ClientError.noConnection) {
                _ = try await pool.execute(method: .POST, path: "/hello", body: ByteBuffer(string: "x"), headTimeout: .milliseconds(200))
            }
            let check = try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30), beyondLimit: true)
            #expect(try await text(check) == "hello")
            holder.body.discard()
            let after = try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))
            #expect(try await text(after) == "hello")
            #expect(upstream.snapshot.requests == 3)
        }
    }

    /// Many requests through one connection, released and taken back-to-back: none is left
    /// waiting for a connection that came free while it was getting in line.
    @Test(.timeLimit(.minutes(1))) func noWaiterMissesAFreedConnection() async throws {
        try await withUpstream(maxConnections: 1) { upstream, pool in
            for _ in 0..<5 {
                try await withThrowingTaskGroup(of: String.self) { tasks in
                    for _ in 0..<40 {
                        tasks.addTask {
                            try await text(pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30)))
                        }
                    }
                    for try await answer in tasks { #expect(answer == "hello") }
                }
            }
            #expect(upstream.snapshot.requests == 200 && upstream.snapshot.mostOpen == 1)
        }
    }

    /// 101 is no answer to a request here: the connection is refused as invalid.
    @Test func switchingProtocolsIsInvalid() async throws {
        try await withUpstream { _, pool in
            await #expect(throws: HTTP1ClientError.invalidResponse("status 101")) {
                _ = try await pool.execute(method: .POST, path: "/switch", body: ByteBuffer(string: "x"), headTimeout: .seconds(30))
            }
        }
    }

    /// `Host` names the server as a URL would: an IPv6 literal in brackets, port 80 left out.
    @Test func hostHeader() async throws {
        try await withUpstream { upstream, pool in
            _ = try await text(pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30)))
            #expect(upstream.snapshot.host == "127.0.0.1:\(upstream.port)")
        }
        #expect(HTTP1Pool.authority(host: "::1", port: 11434) == "[::1]:11434")
        #expect(HTTP1Pool.authority(host: "gpu1", port: 80) == "gpu1")
    }

    /// Past `maxConnections`, requests wait for a connection instead of opening more.
    @Test func connectionsAreCapped() async throws {
        try await withUpstream(maxConnections: 2) { upstream, pool in
            try await withThrowingTaskGroup(of: String.self) { tasks in
                for _ in 0..<8 {
                    tasks.addTask {
                        let response = try await pool.execute(method: .GET, path: "/slow?ms=40", headTimeout: .seconds(30))
                        return try await text(response)
                    }
                }
                for try await answer in tasks { #expect(answer == "slow") }
            }
            #expect(upstream.snapshot.mostOpen <= 2)
            #expect(upstream.snapshot.requests == 8)
        }
    }

    /// The head must come within its timeout; the connection is then closed. The connection's
    /// timer, set by the request before for a later moment, is set again for the shorter one.
    @Test func headTimeout() async throws {
        try await withUpstream { upstream, pool in
            // A kept-alive connection first: under a loaded machine the short deadline would
            // otherwise expire while connecting, which is a connect timeout, not this test's subject.
            #expect(try await text(try await pool.execute(method: .GET, path: "/slow?ms=0", headTimeout: .seconds(60))) == "slow")
            let started = ContinuousClock.now
            await #expect(throws: HTTP1ClientError.headTimeout) {
                _ = try await pool.execute(method: .GET, path: "/hang", headTimeout: .milliseconds(200))
            }
            #expect(ContinuousClock.now - started < .seconds(30)) // not the 60 s of the request before
            let closed = try await closes(upstream, count: 1)
            #expect(closed)
        }
    }

    /// A head timeout is the request's own: the timer left running by an answered request with a
    /// short timeout does not fail the next request on the connection, which has a longer one.
    @Test func anEarlierRequestsHeadTimeoutDoesNotEndTheNext() async throws {
        try await withUpstream { upstream, pool in
            // Timeouts of seconds: the whole suite runs at once on two cores.
            #expect(try await text(try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))) == "hello")
            #expect(try await text(try await pool.execute(method: .GET, path: "/slow?ms=0", headTimeout: .seconds(2))) == "slow")
            let slow = try await pool.execute(method: .GET, path: "/slow?ms=3500", headTimeout: .seconds(60))
            #expect(try await text(slow) == "slow")
            #expect(upstream.snapshot.accepted == 1)
        }
    }

    /// A connection idle for `idleConnectionTimeout` is closed; one in use more often than that
    /// is kept, however long it has been open.
    @Test func idleConnectionsExpire() async throws {
        try await withUpstream(idleConnectionTimeout: .seconds(5)) { upstream, pool in
            // 7 s of requests half a second apart: the connection outlives its first idle
            // moment's expiry. Its longest idle moment is bounded by the time from one request's
            // start to the next one's head, measured: the whole suite runs at once on two cores,
            // and a half-second sleep has been seen to take more than five.
            var longestIdleBound = Duration.zero
            var previousStart: ContinuousClock.Instant?
            for _ in 0..<14 {
                let start = ContinuousClock.now
                let response = try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))
                if let previousStart { longestIdleBound = max(longestIdleBound, .now - previousStart) }
                previousStart = start
                #expect(try await text(response) == "hello")
                try await Task.sleep(for: .milliseconds(500))
            }
            if longestIdleBound < .seconds(5) {
                #expect(upstream.snapshot.accepted == 1)
                #expect(upstream.snapshot.closed == 0)
            }
            let accepted = upstream.snapshot.accepted
            let closed = try await closes(upstream, count: accepted) // then it idles, and is closed
            #expect(closed)
            #expect(pool.idleConnections == 0)
            #expect(try await text(try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))) == "hello")
            #expect(upstream.snapshot.accepted == accepted + 1)
        }
    }

    /// Silence while the body is awaited times out; time the consumer spends elsewhere does not
    /// count (a client that reads slowly is not an upstream that went quiet).
    @Test func idleTimeoutCountsOnlyUpstreamSilence() async throws {
        try await withUpstream { _, pool in
            let slowReader = try await pool.execute(method: .GET, path: "/chunks?n=3&ms=20", headTimeout: .seconds(30))
            var parts: [String] = []
            while let chunk = try await slowReader.body.next(idleTimeout: .seconds(1)) {
                parts.append(String(buffer: chunk))
                try await Task.sleep(for: .milliseconds(1500)) // longer than the idle timeout
            }
            #expect(parts.joined() == "chunk-0;chunk-1;chunk-2;")

            let silent = try await pool.execute(method: .GET, path: "/silent-after-first", headTimeout: .seconds(30))
            #expect(try await silent.body.next(idleTimeout: .seconds(30)).map { String(buffer: $0) } == "chunk-0;")
            await #expect(throws: HTTP1ClientError.idleTimeout) {
                _ = try await silent.body.next(idleTimeout: .milliseconds(150))
            }
        }
    }

    /// A wait with a shorter timeout than the one before it gets its own: the timer left by the
    /// earlier wait is not the one that ends it.
    @Test func aShorterTimeoutAfterALongerOneStillApplies() async throws {
        try await withUpstream { _, pool in
            let response = try await pool.execute(method: .GET, path: "/chunks?n=2&ms=100&silent=1", headTimeout: .seconds(30))
            _ = try await response.body.next(idleTimeout: .seconds(60)) // chunk-0, likely with the head
            _ = try await response.body.next(idleTimeout: .seconds(60)) // chunk-1: a wait of ~100 ms
            let started = ContinuousClock.now
            await #expect(throws: HTTP1ClientError.idleTimeout) {
                _ = try await response.body.next(idleTimeout: .milliseconds(150))
            }
            #expect(ContinuousClock.now - started < .seconds(30)) // not the 60 s of the first wait
        }
    }

    /// Stopping before the end closes the connection: that is how the upstream learns to stop.
    @Test func discardingABodyClosesItsConnection() async throws {
        try await withUpstream { upstream, pool in
            let response = try await pool.execute(method: .GET, path: "/chunks?n=3&ms=10&silent=1", headTimeout: .seconds(30))
            _ = try await response.body.next(idleTimeout: .seconds(30))
            response.body.discard()
            let closed = try await closes(upstream, count: 1)
            #expect(closed)
            let next = try await pool.execute(method: .GET, path: "/hello", headTimeout: .seconds(30))
            #expect(try await text(next) == "hello")
            #expect(upstream.snapshot.accepted == 2)
        }
    }

    /// A cancelled reader gets CancellationError and its connection is closed.
    @Test func cancellingAReaderClosesItsConnection() async throws {
        try await withUpstream { upstream, pool in
            let response = try await pool.execute(method: .GET, path: "/silent-after-first", headTimeout: .seconds(30))
            #expect(try await response.body.next(idleTimeout: .seconds(30)).map { String(buffer: $0) } == "chunk-0;")
            let reader = Task {
                do {
                    _ = try await response.body.next(idleTimeout: .seconds(30)) // the upstream stays silent
                    return "answered"
                } catch is CancellationError {
                    return "cancelled"
                }
            }
            try await Task.sleep(for: .milliseconds(100))
            reader.cancel()
            #expect(try await reader.value == "cancelled")
            let closed = try await closes(upstream, count: 1)
            #expect(closed)
        }
    }

    /// A port nothing listens on is a connection failure, at once.
    @Test func refusedConnection() async throws {
        let (port, socket) = try RefusingPort.make()
        defer { close(socket) }
        let pool = HTTP1Pool(host: "127.0.0.1", port: port, group: group, maxConnections: 2, connectTimeout: .seconds(30))
        defer { pool.shutdown() }
        await #expect(throws: HTTP1ClientError.connectFailed("connection refused")) {
            _ = try await pool.execute(method: .GET, path: "/", headTimeout: .seconds(30))
        }
        // The failed attempt gave its slot back: more attempts fail the same way, none waits.
        for _ in 0..<3 {
            await #expect(throws: HTTP1ClientError.self) {
                _ = try await pool.execute(method: .GET, path: "/", headTimeout: .seconds(30))
            }
        }
    }
}
