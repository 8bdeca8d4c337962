import Core
import DequeModule
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// Settles the database could not take when they were made, kept on local disk until it can:
/// an append-only file of one JSON record per settle, fsynced before `append` returns, so a
/// charge that reached the journal survives a crash of this process or of the machine.
///
/// Each process writes its own file in `directory` and holds an exclusive `flock` on it while
/// it lives. A file nobody holds was left by a process that died: `adoptOrphans` moves its
/// records into this process's journal, to be written like any other. Records are written to
/// the database by `JournalDrainer`, idempotently (a settle is keyed by its request id), so a
/// record written twice (a crash between the database commit and the journal's own bookkeeping)
/// is charged once. The file is emptied when every record has been written, and rewritten with
/// only the waiting records when most of it has been.
///
/// All file work runs on the journal's own thread, in order.
public final class SettleJournal: Sendable {
    public let directory: String
    public let path: String
    /// Past this many bytes waiting, new requests are refused (503): the gateway does not serve
    /// what it could not bill.
    public let maxBytes: Int
    /// A file larger than this, of which waiting records are under a quarter, is rewritten.
    let compactAbove: Int
    private let thread: NIOThreadPool
    private let state: NIOLockedValueBox<State>
    private let logger: Logger

    struct State {
        /// Records on disk, not yet written to the database, oldest first.
        var pending: Deque<Entry> = []
        var pendingBytes = 0
        /// Appends waiting for the next write and fsync (group commit).
        var unwritten: [Append] = []
        var flushing = false
        /// The file: its descriptor (replaced when compacted) and the size of what is known good.
        var fd: Int32
        var fileBytes = 0
    }

    struct Entry: Sendable {
        var usage: UsageRecord
        var size: Int
        var journaledAtMicros: Int64
    }

    struct Append {
        var entries: [Entry]
        var bytes: [UInt8]
        var done: CheckedContinuation<Void, Error>
    }

    /// One line of the file.
    struct Record: Codable {
        var usage: UsageRecord
        var journaledAtMicros: Int64
    }

    /// Opens (creating it) the journal directory and a new file of this process's in it.
    public init(directory: String, maxBytes: Int, compactAbove: Int = 4 << 20, logger: Logger) throws(JournalError) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.compactAbove = compactAbove
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw JournalError("cannot create the settle journal directory \(directory): \(error.localizedDescription)")
        }
        var random = SystemRandomNumberGenerator()
        let path = (directory as NSString).appendingPathComponent("settles-" + String(random.next() as UInt64, radix: 16) + ".journal")
        self.path = path
        let fd = try Self.openLocked(path)
        self.state = NIOLockedValueBox(State(fd: fd))
        self.thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        Self.syncDirectory(directory)
    }

    deinit {
        close(state.withLockedValue { $0.fd })
    }

    public func shutdown() async {
        try? await thread.shutdownGracefully()
    }

    /// Creates `path` and locks it. The lock is checked to be on the file the path still names:
    /// another process adopting orphans could open, lock and unlink a file in the instant between
    /// its creation and its lock.
    static func openLocked(_ path: String) throws(JournalError) -> Int32 {
        for _ in 0..<3 {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { break }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                close(fd)
                break
            }
            var opened = stat(), named = stat()
            if fstat(fd, &opened) == 0, stat(path, &named) == 0, opened.st_ino == named.st_ino, opened.st_dev == named.st_dev {
                return fd
            }
            close(fd)
        }
        throw JournalError("cannot write the settle journal \(path): \(String(cString: strerror(errno)))")
    }

    // MARK: State

    /// Whether settles go straight to the database: false from a failed settle until the
    /// drainer gets one through, so that during an outage a settle does not first wait on a
    /// database that is known to be away.
    var databaseAccepts: Bool {
        get { accepting.withLockedValue { $0 } }
        set { accepting.withLockedValue { $0 = newValue } }
    }
    private let accepting = NIOLockedValueBox(true)

    /// Records waiting to be written to the database.
    public var depth: Int { state.withLockedValue { $0.pending.count } }
    public var isEmpty: Bool { depth == 0 }
    /// Whether new requests must be refused until the journal drains.
    public var isFull: Bool { state.withLockedValue { $0.pendingBytes >= maxBytes } }
    /// When the oldest waiting record was journaled.
    public var oldestMicros: Int64? { state.withLockedValue { $0.pending.first?.journaledAtMicros } }

    /// The oldest records still to be written, at most `limit` of them.
    func first(_ limit: Int) -> [UsageRecord] {
        state.withLockedValue { Array($0.pending.prefix(limit).map(\.usage)) }
    }

    /// The oldest record still to be written.
    var first: UsageRecord? { first(1).first }

    /// The oldest `count` records were written to the database (or set aside): forget them,
    /// and empty or shrink the file when that is worth it.
    func removeFirst(_ count: Int = 1) {
        let (empty, compact) = state.withLockedValue { state -> (Bool, Bool) in
            for _ in 0..<min(count, state.pending.count) { state.pendingBytes -= state.pending.removeFirst().size }
            return (state.pending.isEmpty, state.fileBytes > compactAbove && state.pendingBytes < state.fileBytes / 4)
        }
        if empty || compact { thread.submit { [self] _ in shrinkFile() } }
    }

    // MARK: Appending

    /// Journals a settle; returns once it is on disk. Throws when the disk fails (the record is
    /// then not journaled: the caller must keep it another way).
    func append(_ usage: UsageRecord) async throws {
        try await append([usage])
    }

    func append(_ records: [UsageRecord], journaledAtMicros: Int64 = nowMicros()) async throws {
        guard !records.isEmpty else { return }
        var bytes: [UInt8] = []
        var entries: [Entry] = []
        let encoder = JSONEncoder()
        for usage in records {
            var line = try encoder.encode(Record(usage: usage, journaledAtMicros: journaledAtMicros))
            line.append(0x0A)
            bytes.append(contentsOf: line)
            entries.append(Entry(usage: usage, size: line.count, journaledAtMicros: journaledAtMicros))
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            let startFlush = state.withLockedValue { state -> Bool in
                state.unwritten.append(Append(entries: entries, bytes: bytes, done: continuation))
                defer { state.flushing = true }
                return !state.flushing
            }
            if startFlush { thread.submit { [self] _ in flush() } }
        }
    }

    /// On the journal thread: writes every waiting append, one fsync for all of them. Records
    /// join `pending` only once they are on disk. A failed write is cut off the file again, so
    /// the next records do not land behind a torn line.
    private func flush() {
        while true {
            let (batch, fd, good) = state.withLockedValue { state -> ([Append], Int32, Int) in
                let batch = state.unwritten
                state.unwritten = []
                if batch.isEmpty { state.flushing = false }
                return (batch, state.fd, state.fileBytes)
            }
            guard !batch.isEmpty else { return }
            var failure: Error?
            var written = 0
            for item in batch where failure == nil {
                failure = Self.writeAll(fd, item.bytes, path: path)
                if failure == nil { written += item.bytes.count }
            }
            if failure == nil, fsync(fd) != 0 { failure = JournalError("fsync of \(path) failed: \(String(cString: strerror(errno)))") }
            if failure != nil {
                _ = ftruncate(fd, off_t(good))
            }
            state.withLockedValue { state in
                guard failure == nil else { return }
                state.fileBytes = good + written
                for item in batch {
                    for entry in item.entries {
                        state.pending.append(entry)
                        state.pendingBytes += entry.size
                    }
                }
            }
            for item in batch {
                if let failure { item.done.resume(throwing: failure) } else { item.done.resume() }
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) -> Error? {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return JournalError("write to \(path) failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        return nil
    }

    /// On the journal thread: empties the file when every record has been written, or rewrites
    /// it with only the waiting ones when they are a small part of it (a journal that never
    /// quite drains must not grow without end). The rewrite goes to a new locked file renamed
    /// over the old one, so the file is whole at every instant.
    private func shrinkFile() {
        let (fd, quiet) = state.withLockedValue { ($0.fd, $0.unwritten.isEmpty && !$0.flushing) }
        guard quiet else { return } // an append is on its way; the next removal comes back here
        let snapshot = state.withLockedValue { state -> [Entry]? in
            if state.pending.isEmpty { return [] }
            return state.fileBytes > compactAbove && state.pendingBytes < state.fileBytes / 4 ? Array(state.pending) : nil
        }
        guard let snapshot else { return }
        if snapshot.isEmpty {
            if ftruncate(fd, 0) != 0 || fsync(fd) != 0 {
                logger.warning("could not empty the settle journal", metadata: ["path": "\(path)"])
                return
            }
            state.withLockedValue { $0.fileBytes = 0 }
            return
        }
        let temporary = path + ".compacting"
        do {
            let newFd = try Self.openLocked(temporary)
            let encoder = JSONEncoder()
            var bytes: [UInt8] = []
            for entry in snapshot {
                var line = try encoder.encode(Record(usage: entry.usage, journaledAtMicros: entry.journaledAtMicros))
                line.append(0x0A)
                bytes.append(contentsOf: line)
            }
            if let error = Self.writeAll(newFd, bytes, path: temporary) { throw error }
            guard fsync(newFd) == 0, rename(temporary, path) == 0 else { throw JournalError("rename failed") }
            Self.syncDirectory(directory)
            // The descriptor number stays; it now names the new file (and its lock).
            dup2(newFd, fd)
            close(newFd)
            state.withLockedValue { $0.fileBytes = bytes.count }
        } catch {
            unlink(temporary)
            logger.warning("could not compact the settle journal", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    /// Makes a file's creation, rename or removal in `directory` survive a power loss.
    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    // MARK: Adopting files of dead processes

    /// Moves the records of journal files that no live process holds (left by a crash, or by
    /// an outage at shutdown) into this journal, then deletes those files. Returns the adopted
    /// records. A torn last line (a crash mid-write) is skipped: its settle had not been
    /// acknowledged, so its response never completed.
    public func adoptOrphans() async throws -> [UsageRecord] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var adopted: [UsageRecord] = []
        for name in names.sorted() where name.hasPrefix("settles-") && name.hasSuffix(".journal") {
            let other = (directory as NSString).appendingPathComponent(name)
            guard other != path else { continue }
            let otherFd = open(other, O_RDWR | O_CLOEXEC)
            guard otherFd >= 0 else { continue }
            defer { close(otherFd) }
            guard flock(otherFd, LOCK_EX | LOCK_NB) == 0 else { continue } // a live process's journal
            let records = Self.readRecords(other, logger: logger)
            // All of a file's records in one write and fsync, before the file goes.
            for record in records.chunked(1000) {
                try await append(record.map(\.usage), journaledAtMicros: record.first?.journaledAtMicros ?? nowMicros())
            }
            unlink(other)
            Self.syncDirectory(directory)
            adopted += records.map(\.usage)
            if !records.isEmpty {
                logger.notice("adopted settles from a previous run's journal", metadata: ["path": "\(other)", "count": "\(records.count)"])
            }
        }
        return adopted
    }

    static func readRecords(_ path: String, logger: Logger) -> [Record] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let decoder = JSONDecoder()
        var records: [Record] = []
        for line in data.split(separator: 0x0A, omittingEmptySubsequences: true) {
            if let record = try? decoder.decode(Record.self, from: Data(line)) {
                records.append(record)
            } else {
                logger.warning("skipped an unreadable line in a settle journal", metadata: ["path": "\(path)", "bytes": "\(line.count)"])
            }
        }
        return records
    }

    /// Keeps a record the database refused for good in a file beside the journal, so that it is
    /// never silently lost. Returns whether it is on disk.
    func setAside(_ usage: UsageRecord) async -> Bool {
        let file = (directory as NSString).appendingPathComponent("rejected-settles.jsonl")
        guard var encoded = try? JSONEncoder().encode(Record(usage: usage, journaledAtMicros: nowMicros())) else { return false }
        encoded.append(0x0A)
        let bytes = [UInt8](encoded)
        return (try? await thread.runIfActive { () -> Bool in
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return false }
            defer { close(fd) }
            return Self.writeAll(fd, bytes, path: file) == nil && fsync(fd) == 0
        }) ?? false
    }
}

extension Array {
    func chunked(_ size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}

/// The settle journal cannot be used.
public struct JournalError: Error, CustomStringConvertible {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}
