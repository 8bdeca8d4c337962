#ifndef LMSVR_C_RUNTIME_H
#define LMSVR_C_RUNTIME_H

// What lmsvr needs from the C runtime that Swift's Glibc module does not export.

#if defined(__linux__)
#include <malloc.h> // mallopt, M_TRIM_THRESHOLD (AllocatorTuning)
#endif

/// The Swift Concurrency runtime's hook for enqueueing a global job: a plain global variable of
/// libswift_Concurrency (a function pointer, NULL while no hook is installed). Named here so that
/// the linker resolves it: `dlsym` finds it only when the runtime is linked dynamically, since a
/// `--static-swift-stdlib` link hides the archive's symbols (`--exclude-libs ALL`).
extern void *swift_task_enqueueGlobal_hook;

/// The hook's address, for an atomic compare-and-exchange from Swift.
static inline void **lmsvr_enqueue_global_hook_address(void) { return &swift_task_enqueueGlobal_hook; }

#endif
