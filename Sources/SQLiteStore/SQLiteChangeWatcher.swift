import Core
import EventLoopClock

/// The change feed on SQLite, which has no LISTEN/NOTIFY: polls `PRAGMA data_version`, which
/// moves only when another process (the CLI: revoke-key, set-pricing, …) commits to the file.
/// The server's own holds and settles never move it, so its caches are flushed only by real
/// outside changes, within one poll interval.
public struct SQLiteChangeWatcher: Sendable {
    let database: SQLiteDatabase
    let interval: Duration

    /// 50 ms keeps a revocation well inside the 100 ms the design allows, for a statement that
    /// costs microseconds.
    public init(database: SQLiteDatabase, interval: Duration = .milliseconds(50)) {
        self.database = database
        self.interval = interval
    }

    /// Reports `.connected` after the first successful read, `.flush` after every outside
    /// commit, `.unchanged` after every read that found none (as of the moment the read was
    /// asked for: any commit before it would have moved the version), `.disconnected` while the
    /// file cannot be read. Returns when the task is cancelled.
    public func run(_ handle: @Sendable (ChangeEvent) -> Void) async {
        var last: Int64?
        while !Task.isCancelled {
            let asked = ContinuousClock.now
            do {
                let version = try await database.dataVersion()
                if last == nil {
                    handle(.connected)
                } else if version != last {
                    handle(.flush)
                } else {
                    handle(.unchanged(asOf: asked))
                }
                last = version
            } catch {
                if last != nil { handle(.disconnected) }
                last = nil
            }
            try? await EventLoopClock.sleep(for: interval)
        }
    }
}
