import NIOCore
import NIOPosix

/// Sleeps on a timer of NIO's event loops rather than through `Task.sleep`.
///
/// lmsvr runs Swift Concurrency on NIO's event loops, but NIO takes over only the global
/// executor's enqueue: `Task.sleep` still arms a Dispatch timer, whose expiry wakes Dispatch's
/// timer thread, then one of its worker threads, which only then enqueues the task onto an
/// event loop. On an idle gateway that was most of its CPU (the SQLite change watcher alone sleeps
/// 20 times a second). An event loop's timer is its own `epoll_wait` timeout: one wake-up, on
/// the thread that runs the task anyway.
public enum EventLoopClock {
    /// Returns after `duration`, or throws `CancellationError` as soon as the task is cancelled.
    /// The timer is armed on one of the singleton group's loops (the current one when called from
    /// one), which never shut down: a timer on a loop that did would never fire.
    public static func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let scheduled = MultiThreadedEventLoopGroup.singleton.any().scheduleTask(in: TimeAmount(duration)) {}
        do {
            try await withTaskCancellationHandler {
                try await scheduled.futureResult.get()
            } onCancel: {
                scheduled.cancel()
            }
        } catch EventLoopError.cancelled {
            throw CancellationError()
        }
    }
}
