@testable import App
import Hummingbird
import Testing

/// What keeps an open stream small: each request is answered in a child task (its deep async
/// stack is freed once the response's head is returned), and client connections read into small
/// buffers that grow for large bodies.
@Suite("Per-request memory")
struct RequestMemoryTests {
    @TaskLocal static var tag: String?

    @Test func theChildsResponseIsReturnedAsItIs() async throws {
        let response = try await ChildTaskResponder<CallbackResponder<GatewayContext>>.inChildTask {
            Response(status: .accepted, headers: [.xRequestId: "r1"])
        }
        #expect(response.status == .accepted)
        #expect(response.headers[.xRequestId] == "r1")
    }

    @Test func theChildsErrorIsThrownAsItIs() async throws {
        do {
            _ = try await ChildTaskResponder<CallbackResponder<GatewayContext>>.inChildTask { throw GatewayError.routeNotFound("/x") }
            Issue.record("no error thrown")
        } catch GatewayError.routeNotFound(let path) {
            #expect(path == "/x")
        }
    }

    @Test func theWorkRunsInAnotherTaskThatSeesTheCallersTaskLocals() async throws {
        let outer = withUnsafeCurrentTask { $0?.hashValue }
        try await Self.$tag.withValue("request-7") {
            _ = try await ChildTaskResponder<CallbackResponder<GatewayContext>>.inChildTask {
                // Task-locals (ServiceLifecycle's shutdown state, tracing, logging) are the caller's.
                #expect(Self.tag == "request-7")
                let inner = withUnsafeCurrentTask { $0?.hashValue }
                #expect(inner != nil && inner != outer)
                return Response(status: .ok)
            }
        }
    }

    @Test func cancellingTheCallerCancelsTheWork() async throws {
        let (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
        let call = Task {
            try await ChildTaskResponder<CallbackResponder<GatewayContext>>.inChildTask {
                startedContinuation.yield()
                try await Task.sleep(for: .seconds(30))
                return Response(status: .ok)
            }
        }
        // Cancelled once the work runs in its child, not before it started.
        var iterator = started.makeAsyncIterator()
        await iterator.next()
        call.cancel()
        await #expect(throws: CancellationError.self) { _ = try await call.value }
    }

    /// `serve`'s application answers through the child-task responder.
    @Test func theGatewayAnswersEveryRequestInAChildTask() async throws {
        try await GatewayHarness.with { h in
            #expect(ObjectIdentifier(h.responderType) == ObjectIdentifier(ChildTaskResponder<RouterResponder<GatewayContext>>.self))
            let live = try await h.send(.GET, "/health/live")
            #expect(live.status == 200)
        }
    }

    /// Bodies far over the first 512-byte read arrive whole: the reads grow with the body.
    @Test func aLargeBodyReachesTheUpstreamWholeAndIsBilled() async throws {
        try await GatewayHarness.with { h in
            let (customer, key) = try await h.customer(budgetNanos: nil)
            let prompt = String(repeating: "abcdefghij", count: 30_000)
            let body = #"{"model":"llama3","stream":false,"messages":[{"role":"user","content":"\#(prompt)"}]}"#
            let r = try await h.send(.POST, "/api/chat", key: key, json: body)
            #expect(r.status == 200)
            let forwarded = try #require(h.fake.recorder.lastBody("/api/chat"))
            #expect(forwarded.contains(prompt))
            #expect(try await h.ledger().count == 1)
            #expect(try await h.budget(customer).spent > .zero)
        }
    }
}
