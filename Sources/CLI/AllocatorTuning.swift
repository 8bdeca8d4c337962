import CRuntime

/// How much freed memory glibc keeps at the top of a heap before giving it back to the kernel.
///
/// By default glibc returns anything beyond 128 KiB at the top of a thread's heap with
/// `madvise(MADV_DONTNEED)` as soon as it is freed. Under concurrency the SQLite group commit runs
/// each member in its own savepoint, whose journal SQLite allocates and frees in memory, so the
/// database thread's heap crossed that line once per billed request: `strace -c -f` at c=64
/// counted 0.93 `madvise` per request (none at c=1, where a group of one needs no savepoint), and
/// the pages given back are faulted in, zeroed, on the next. Keeping up to 1 MiB per heap costs
/// at most that much resident memory per thread that allocates, and removes both.
enum AllocatorTuning {
    static let trimThresholdBytes: Int32 = 1 << 20

    static func keepFreedMemoryForReuse() {
        #if canImport(Glibc)
        _ = mallopt(M_TRIM_THRESHOLD, trimThresholdBytes)
        #endif
    }
}
