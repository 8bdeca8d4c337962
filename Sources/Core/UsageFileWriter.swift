import Foundation

/// Writes ledger rows to a file or stdout in an export format (`UsageExport`), in 256 KiB writes.
///
/// A file is written under a temporary name, fsynced and renamed into place only when complete, so
/// a failed export never leaves a truncated file behind and `archive-usage` never drops rows that
/// are not on disk.
///
/// `@unchecked Sendable`: the store calls the row closure sequentially on one thread.
public final class UsageFileWriter: @unchecked Sendable {
    private let file: UnsafeMutablePointer<FILE>
    private let path: String?
    private let temporaryPath: String?
    private let format: UsageExportFormat
    /// Rows are written straight into this memory (`UsageExport.write`), flushed when a row might
    /// not fit.
    private var buffer: UnsafeMutablePointer<UInt8>
    private var capacity = UsageFileWriter.flushAt
    private var count = 0
    public private(set) var rows = 0
    private var closed = false
    private static let flushAt = 256 * 1024

    public init(path: String?, format: UsageExportFormat) throws {
        self.path = path
        self.format = format
        if let path {
            let temporary = path + ".partial-\(getpid())"
            guard let file = fopen(temporary, "w") else { throw Self.failure("cannot write \(path)") }
            self.file = file
            self.temporaryPath = temporary
        } else {
            self.file = fdopen(dup(STDOUT_FILENO), "w")!  // our own stream on stdout
            self.temporaryPath = nil
        }
        buffer = .allocate(capacity: capacity)
        put(format.opening)
    }

    deinit { buffer.deallocate() }

    /// Appends one row; throws when the disk refuses it (full, gone), which ends the export.
    public func append(_ row: UsageRecord) throws {
        let bound = UsageExport.maximumBytes(of: row)
        if count + bound > capacity {
            try flush()
            if bound > capacity { grow(to: bound) }
        }
        count += UsageExport.write(row, index: rows, format: format, to: buffer + count)
        rows += 1
    }

    /// Closes the format, writes everything and, for a file, makes it durable (unless `durable`
    /// is false: a scratch file about to be read and removed) and moves it into place.
    public func finish(durable: Bool = true) throws {
        try flush()
        put(format.closing(rows: rows))
        try flush()
        guard fflush(file) == 0, ferror(file) == 0 else { throw Self.failure("cannot write \(path ?? "stdout")") }
        guard let temporaryPath, let path else {
            close()
            return
        }
        guard !durable || fsync(fileno(file)) == 0 else { throw Self.failure("cannot write \(path)") }
        guard close() else { throw Self.failure("cannot write \(path)") }
        guard rename(temporaryPath, path) == 0 else { throw Self.failure("cannot move the export into \(path)") }
        guard durable else { return }
        // The rename itself is durable once the directory is.
        let directory = open((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent,
                             O_RDONLY)
        if directory >= 0 {
            fsync(directory)
            Glibc.close(directory)
        }
    }

    /// Drops what was written (after a failure).
    public func abandon() {
        close()
        if let temporaryPath { unlink(temporaryPath) }
    }

    /// Closes the stream once (`fclose` twice is undefined); whether the close succeeded.
    @discardableResult
    private func close() -> Bool {
        guard !closed else { return true }
        closed = true
        return fclose(file) == 0
    }

    private func flush() throws {
        guard count > 0 else { return }
        guard fwrite(buffer, 1, count, file) == count else { throw Self.failure("cannot write \(path ?? "stdout")") }
        count = 0
    }

    /// Copies a format's opening or closing into the (empty or roomy) buffer.
    private func put(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        if count + bytes.count > capacity { grow(to: count + bytes.count) }
        bytes.withUnsafeBufferPointer { (buffer + count).update(from: $0.baseAddress!, count: $0.count) }
        count += bytes.count
    }

    private func grow(to size: Int) {
        let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
        larger.update(from: buffer, count: count)
        buffer.deallocate()
        buffer = larger
        capacity = size
    }

    private static func failure(_ what: String) -> UsageFileError {
        UsageFileError(description: "\(what): \(String(cString: strerror(errno)))")
    }
}

/// A usage file could not be written (the disk refused it).
public struct UsageFileError: Error, CustomStringConvertible {
    public var description: String
}
