/// What a change feed (PostgreSQL LISTEN/NOTIFY, or SQLite's data version) reports to the caches
/// of a running gateway.
public enum ChangeEvent: Sendable, Equatable {
    /// The feed is (again) listening: notices from now on will arrive; anything before may be lost.
    case connected
    /// The feed lost its connection: notices may be missed until `connected`.
    case disconnected
    /// A notice on the channel: a change was committed (`key:ID`, `customer:ID`, `price:MODEL`,
    /// or `flush` for a TRUNCATE), or a replica's marker came back (`sync:TOKEN`).
    case notice(String)
    /// Something changed, without saying what (SQLite): drop everything cached.
    case flush
    /// Nothing has changed up to this instant, so what is cached is still current as of then
    /// (SQLite: the moment a poll that found the file's data version unmoved began; PostgreSQL
    /// confirms with markers instead, see `ChangeConfirmer`).
    case unchanged(asOf: ContinuousClock.Instant)
}
