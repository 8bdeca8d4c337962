import EventLoopClock
import Testing

@Suite("EventLoopClock: sleeping on an event loop's timer")
struct EventLoopClockTests {
    @Test func aSleepLastsAtLeastItsDuration() async throws {
        let start = ContinuousClock.now
        try await EventLoopClock.sleep(for: .milliseconds(30))
        #expect(ContinuousClock.now - start >= .milliseconds(30))
    }

    @Test func cancellingTheTaskEndsItsSleepWithCancellationError() async throws {
        // Five seconds: a missed cancellation returns without an error, and the expectation fails.
        let sleeper = Task { try await EventLoopClock.sleep(for: .seconds(5)) }
        try await Task.sleep(for: .milliseconds(200)) // let it arm its timer and wait on it
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }

    @Test func aTaskAlreadyCancelledDoesNotSleep() async throws {
        let sleeper = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await EventLoopClock.sleep(for: .seconds(5))
        }
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }
}
