import Atomics
import CRuntime
import NIOCore
import NIOPosix

/// Runs Swift Concurrency's global jobs on NIO's singleton event loops, as the generic executor.
///
/// NIO's own takeover (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`)
/// runs every job with the event loop as the job's serial executor. A nonisolated async function
/// formally runs on the generic executor, so the runtime hops there on entry, and it cannot take
/// over the thread inline from a custom serial executor: every such hop enqueued the task onto
/// the loop again and ran it on a later pass. `lmsvr serve` made about 117 of those hops per
/// billed request, and ran 125 jobs for it (counted with uprobes on `swift_task_switch` and
/// `swift_job_run`). Run as the generic executor, as Dispatch's pool runs them, the same hops
/// continue inline: 8 jobs per request, one for each real wait.
///
/// The mechanism is NIO's: the Concurrency runtime's `swift_task_enqueueGlobal_hook`, swapped
/// in atomically. Unlike NIO, which finds the hook with `dlsym`, the address comes from the linker
/// (`CRuntime`), so the takeover also works in a binary built with
/// `--static-swift-stdlib` (the Docker image), where `dlsym` cannot see the runtime's symbols. Jobs go to the current loop when enqueued from one of the group's loops (a task
/// stays on the loop that owns its sockets), otherwise to the next loop.
public enum GlobalExecutorOnEventLoops {
    private static let installed = ManagedAtomic(false)

    /// Whether `install()` succeeded in this process.
    public static var isInstalled: Bool { installed.load(ordering: .relaxed) }

    /// Installs the hook. Returns false, changing nothing, if a hook is already installed or
    /// the runtime's hook has an unknown shape (a compiler this was not written for). Call once,
    /// from the main thread, before any task is created.
    @discardableResult
    public static func install() -> Bool {
        #if compiler(>=6.0) && compiler(<6.6) && !os(Windows)
        _ = genericExecutor // checks the layout now rather than on a loop
        guard let address = UnsafeMutableRawPointer(lmsvr_enqueue_global_hook_address()) else { return false }
        let hook = UnsafeAtomic<UnsafeRawPointer?>(at: address.assumingMemoryBound(to: UnsafeRawPointer?.AtomicRepresentation.self))
        guard swapIn(hook) else { return false }
        installed.store(true, ordering: .relaxed)
        return true
        #else
        return false
        #endif
    }

    /// Sets the hook to ours if no other is set.
    private static func swapIn(_ hook: UnsafeAtomic<UnsafeRawPointer?>) -> Bool {
        withUnsafeTemporaryAllocation(of: EnqueueHook.self, capacity: 1) { slot in
            slot.baseAddress!.initialize(to: { job, _ in
                MultiThreadedEventLoopGroup.singleton.any().execute { job.runSynchronously(on: GlobalExecutorOnEventLoops.genericExecutor) }
            })
            return slot.baseAddress!.withMemoryRebound(to: UnsafeRawPointer.self, capacity: 1) { function in
                hook.compareExchange(expected: nil, desired: function.pointee, ordering: .sequentiallyConsistent).exchanged
            }
        }
    }

    /// The runtime's hook: the job, and the enqueue it replaces.
    private typealias EnqueueHook = @convention(thin) (UnownedJob, @convention(thin) (UnownedJob) -> Void) -> Void

    /// The generic executor: the runtime's `SerialExecutorRef::generic()` is two zero words, and
    /// there is no public spelling of it. The layout is checked once, when first used.
    private static let genericExecutor: UnownedSerialExecutor = {
        precondition(MemoryLayout<UnownedSerialExecutor>.size == 2 * MemoryLayout<UInt>.size,
                     "UnownedSerialExecutor is no longer two words")
        return unsafeBitCast((UInt(0), UInt(0)), to: UnownedSerialExecutor.self)
    }()
}
