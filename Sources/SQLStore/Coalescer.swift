import NIOConcurrencyHelpers

/// Turns calls that arrive together into batches, without waiting for any: the first call of a
/// key runs at once; calls of that key that arrive while it runs wait, and then run together as
/// the next batch. Under load, batches grow by themselves; alone, a call pays nothing extra but
/// a task hop.
final class Coalescer<Key: Hashable & Sendable, Item: Sendable, Output: Sendable>: Sendable {
    /// Runs one batch; returns one output per item, in order.
    typealias Run = @Sendable (Key, [Item]) async throws -> [Output]

    private struct Waiting {
        var item: Item
        var continuation: CheckedContinuation<Output, Error>
    }

    private struct Queue {
        var waiting: [Waiting] = []
    }

    private let run: Run
    private let maxBatch: Int
    /// Keys with a batch running (a key is absent when idle, so the map stays small).
    private let queues = NIOLockedValueBox([Key: Queue]())

    init(maxBatch: Int, run: @escaping Run) {
        self.maxBatch = maxBatch
        self.run = run
    }

    func submit(_ item: Item, key: Key) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let start = queues.withLockedValue { queues -> Bool in
                let idle = queues[key] == nil
                queues[key, default: Queue()].waiting.append(Waiting(item: item, continuation: continuation))
                return idle
            }
            if start { Task { await self.drain(key) } }
        }
    }

    /// Runs batches of `key` until none is waiting.
    private func drain(_ key: Key) async {
        while true {
            let batch = queues.withLockedValue { queues -> [Waiting] in
                guard var queue = queues[key], !queue.waiting.isEmpty else {
                    queues[key] = nil
                    return []
                }
                let batch = Array(queue.waiting.prefix(maxBatch))
                queue.waiting.removeFirst(batch.count)
                queues[key] = queue
                return batch
            }
            guard !batch.isEmpty else { return }
            do {
                let outputs = try await run(key, batch.map(\.item))
                for (waiting, output) in zip(batch, outputs) { waiting.continuation.resume(returning: output) }
            } catch {
                for waiting in batch { waiting.continuation.resume(throwing: error) }
            }
        }
    }
}
