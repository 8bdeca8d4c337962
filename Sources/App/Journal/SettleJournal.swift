import Core
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
/// records into this process's journal at start, to be written like any other. Records are
/// written to the database in order by `JournalDrainer`, idempotently (a settle is keyed by its
/// request id), so a record written twice (a crash between the database commit and the journal's
/// own bookkeeping) is charged once. The file is emptied whenever every record has been written.
public final class SettleJournal: Sendable {
    public let directory: String
    public let path: String
    /// Past this many bytes waiting, new requests are refused (503): the gateway does not serve
    /// what it could not bill.
    public let maxBytes: Int
    private let fd: Int32
    private let thread: NIOThreadPool
    private let state = NIOLockedValueBox(State())
    private let logger: Logger

    struct State {
        /// Records not yet written to the database, oldest first.
        var pending: [Entry] = []
        var pendingBytes = 0
        /// Appends waiting for the next write and fsync (group commit).
        var unwritten: [(bytes: [UInt8], done: CheckedContinuation<Void, Error>)] = []
        var flushing = false
    }

    struct Entry: Sendable {
        var usage: UsageRecord
        var size: Int
        var journaledAtMicros: Int64
    }

    /// One line of the file.
    struct Record: Codable {
        var usage: UsageRecord
        var journaledAtMicros: Int64
    }

    /// Opens (creating it) the journal directory and a new file of this process's in it.
    public init(directory: String, maxBytes: Int, logger: Logger) throws(JournalError) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.logger = logger
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw JournalError("cannot create the settle journal directory \(directory): \(error.localizedDescription)")
        }
        var random = SystemRandomNumberGenerator()
        let name = "settles-" + String(random.next() as UInt64, radix: 16) + ".journal"
        self.path = (directory as NSString).appendingPathComponent(name)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            throw JournalError("cannot write the settle journal in \(directory): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        self.thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    deinit {
        close(fd)
    }

    public func shutdown() async {
        try? await thread.shutdownGracefully()
    }

    // MARK: State

    /// Records waiting to be written to the database.
    public var depth: Int { state.withLockedValue { $0.pending.count } }
    public var isEmpty: Bool { depth == 0 }
    /// Whether new requests must be refused until the journal drains.
    public var isFull: Bool { state.withLockedValue { $0.pendingBytes >= maxBytes } }
    /// When the oldest waiting record was journaled.
    public var oldestMicros: Int64? { state.withLockedValue { $0.pending.first?.journaledAtMicros } }

    /// The oldest record still to be written.
    var first: UsageRecord? { state.withLockedValue { $0.pending.first?.usage } }

    /// The oldest record was written to the database (or set aside): forget it, and empty the
    /// file once nothing is left.
    func removeFirst() {
        let empty = state.withLockedValue { state -> Bool in
            guard !state.pending.isEmpty else { return false }
            state.pendingBytes -= state.pending.removeFirst().size
            return state.pending.isEmpty
        }
        if empty { truncateIfDrained() }
    }

    // MARK: Appending

    /// Journals a settle; returns once it is on disk. If the disk fails, the record is still
    /// kept (in memory) to be written to the database, and the error is thrown for the caller
    /// to report.
    func append(_ usage: UsageRecord) async throws {
        let now = nowMicros()
        var bytes = try JSONEncoder().encode(Record(usage: usage, journaledAtMicros: now))
        bytes.append(0x0A)
        let line = [UInt8](bytes)
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
            let startFlush = state.withLockedValue { state -> Bool in
                state.pending.append(Entry(usage: usage, size: line.count, journaledAtMicros: now))
                state.pendingBytes += line.count
                state.unwritten.append((line, continuation))
                defer { state.flushing = true }
                return !state.flushing
            }
            if startFlush { thread.submit { [self] _ in flush() } }
        }
    }

    /// On the journal thread: writes every waiting append, one fsync for all of them.
    private func flush() {
        while true {
            let batch = state.withLockedValue { state -> [(bytes: [UInt8], done: CheckedContinuation<Void, Error>)] in
                let batch = state.unwritten
                state.unwritten = []
                if batch.isEmpty { state.flushing = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            var failure: Error?
            for item in batch where failure == nil {
                failure = writeAll(item.bytes)
            }
            if failure == nil, fsync(fd) != 0 { failure = JournalError("fsync of \(path) failed: \(String(cString: strerror(errno)))") }
            for item in batch {
                if let failure { item.done.resume(throwing: failure) } else { item.done.resume() }
            }
        }
    }

    private func writeAll(_ bytes: [UInt8]) -> Error? {
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

    /// Empties the file when every record has been written to the database and no append is
    /// on its way to the file (on the journal thread, so it is ordered with the writes).
    private func truncateIfDrained() {
        thread.submit { [self] _ in
            let drained = state.withLockedValue { $0.pending.isEmpty && $0.unwritten.isEmpty && !$0.flushing }
            guard drained else { return }
            if ftruncate(fd, 0) != 0 || fsync(fd) != 0 {
                logger.warning("could not empty the settle journal", metadata: ["path": "\(path)"])
            }
        }
    }

    // MARK: Adopting files of dead processes

    /// Moves the records of journal files that no live process holds (left by a crash or an
    /// outage at shutdown) into this journal, then deletes those files. Returns how many records
    /// were adopted. A torn last line (a crash mid-write) is skipped: its settle had not been
    /// acknowledged, so its response never completed.
    public func adoptOrphans() async throws -> Int {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        var adopted = 0
        for name in names.sorted() where name.hasPrefix("settles-") && name.hasSuffix(".journal") {
            let other = (directory as NSString).appendingPathComponent(name)
            guard other != path else { continue }
            let otherFd = open(other, O_RDWR | O_CLOEXEC)
            guard otherFd >= 0 else { continue }
            defer { close(otherFd) }
            guard flock(otherFd, LOCK_EX | LOCK_NB) == 0 else { continue } // a live process's journal
            let records = Self.readRecords(other, logger: logger)
            for record in records { try await append(record.usage) }
            unlink(other)
            adopted += records.count
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

    /// Keeps a record the database refused for good, in a file beside the journal, so that it
    /// is never silently lost.
    func setAside(_ usage: UsageRecord) async {
        let file = (directory as NSString).appendingPathComponent("rejected-settles.jsonl")
        guard var encoded = try? JSONEncoder().encode(Record(usage: usage, journaledAtMicros: nowMicros())) else { return }
        encoded.append(0x0A)
        let bytes = [UInt8](encoded)
        try? await thread.runIfActive {
            let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard fd >= 0 else { return }
            defer { close(fd) }
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            _ = fsync(fd)
        }
    }
}

/// The settle journal cannot be used.
public struct JournalError: Error, CustomStringConvertible {
    public var description: String

    init(_ description: String) {
        self.description = description
    }
}
