import CLibPQ
import Core
import SQLStore

/// One libpq connection, with its prepared statements.
///
/// `@unchecked Sendable`: the pool lends a connection to exactly one closure at a time, which runs
/// on one of the pool's threads, so the handle is never used concurrently.
final class PGConnection: SQLConnection, @unchecked Sendable {
    let dialect = SQLDialect.postgres
    private let handle: OpaquePointer
    private var prepared: [String: String] = [:]

    /// Connects, giving up after `connectTimeoutSeconds` unless the connection string sets its own.
    init(conninfo: String, connectTimeoutSeconds: Int = 10) throws(SQLError) {
        // Keywords processed in order, later ones override: our defaults first, then the
        // operator's string (URI or key=value) expanded through `dbname`.
        // TCP keepalives and a user timeout, so a connection to a server that vanished without a
        // word (a partition, a dead host) fails in about half a minute instead of hanging.
        let keywords = ["connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                        "tcp_user_timeout", "dbname"]
        let values = [String(connectTimeoutSeconds), "1", "15", "5", "3", "30000", conninfo]
        let conn = withCStrings(keywords) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else { throw .connectionFailed("out of memory") }
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.firstLine(String(cString: PQerrorMessage(conn)))
            PQfinish(conn)
            throw .connectionFailed(DatabaseLocation.redact(message))
        }
        self.handle = conn
        // libpq prints server NOTICEs to stderr by default; they are not for operators' terminals.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
    }

    deinit { PQfinish(handle) }

    /// Whether the connection is still usable; a broken one is discarded by the pool.
    var isHealthy: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Whether the connection is idle (not inside a transaction), as it must be when returned.
    var isIdle: Bool { PQtransactionStatus(handle) == PQTRANS_IDLE }

    func execute(_ sql: String, _ binds: [SQLValue]) throws(SQLError) -> [SQLRow] {
        let name = try preparedName(for: sql)
        let result = withParameters(binds) { params in
            PQexecPrepared(handle, name, Int32(binds.count), params, nil, nil, 0)
        }
        defer { PQclear(result) }
        try check(result)
        return rows(of: result)
    }

    func forEachRow(_ sql: String, _ binds: [SQLValue], _ body: (SQLRow) throws -> Void) throws {
        let sent = withParameters(binds) { params in
            PQsendQueryParams(handle, sql, Int32(binds.count), nil, params, nil, nil, 0)
        }
        guard sent == 1 else { throw failure(nil) }
        PQsetSingleRowMode(handle)
        var bodyError: Error?
        while let result = PQgetResult(handle) {
            defer { PQclear(result) }
            if bodyError != nil { continue } // drain what the server still sends
            switch PQresultStatus(result) {
            case PGRES_SINGLE_TUPLE:
                do {
                    try body(rows(of: result)[0])
                } catch {
                    bodyError = error
                    if let cancel = PQgetCancel(handle) {
                        var buffer = [CChar](repeating: 0, count: 256)
                        PQcancel(cancel, &buffer, 256)
                        PQfreeCancel(cancel)
                    }
                }
            case PGRES_TUPLES_OK:
                break
            default:
                try check(result)
            }
        }
        if let bodyError { throw bodyError }
    }

    func executeScript(_ sql: String) throws(SQLError) {
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        try check(result)
    }

    func notifyChange(_ payload: String) throws(SQLError) {
        try execute("SELECT pg_notify($1, $2)", .text(ChangeNotice.channel), .text(payload))
    }

    // MARK: Helpers

    private func preparedName(for sql: String) throws(SQLError) -> String {
        if let name = prepared[sql] { return name }
        let name = "lmsvr_\(prepared.count + 1)"
        let result = PQprepare(handle, name, sql, 0, nil)
        defer { PQclear(result) }
        try check(result)
        prepared[sql] = name
        return name
    }

    private func check(_ result: OpaquePointer?) throws(SQLError) {
        let status = result.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        if status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_SINGLE_TUPLE
            || status == PGRES_EMPTY_QUERY {
            return
        }
        throw failure(result)
    }

    private func failure(_ result: OpaquePointer?) -> SQLError {
        let message: String
        if let result, let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))) {
            message = String(cString: primary)
        } else {
            message = Self.firstLine(String(cString: PQerrorMessage(handle)))
        }
        let state = result.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) } ?? ""
        // Connection failures, a server shutting down or out of resources (class 53), a read-only
        // server (a failover in progress) and cancelled statements all mean "not now": the caller
        // may try again later (the settle journal does).
        if PQstatus(handle) != CONNECTION_OK || state.hasPrefix("08") || state.hasPrefix("53") || state.hasPrefix("57")
            || state.hasPrefix("58") || state == "25006" {
            return .connectionFailed(message.isEmpty ? "connection lost" : message)
        }
        switch state {
        case "23505": return .uniqueViolation(message)
        case "40001", "40P01", "55P03": return .retryable(message)
        default: return .other(state.isEmpty ? message : "\(message) (SQLSTATE \(state))")
        }
    }

    private func rows(of result: OpaquePointer?) -> [SQLRow] {
        guard let result else { return [] }
        let rowCount = PQntuples(result), columnCount = PQnfields(result)
        guard rowCount > 0 else { return [] }
        let integerColumns = (0..<columnCount).map { [20, 21, 23].contains(PQftype(result, $0)) }
        var rows: [SQLRow] = []
        rows.reserveCapacity(Int(rowCount))
        for r in 0..<rowCount {
            var values: [SQLValue] = []
            values.reserveCapacity(Int(columnCount))
            for c in 0..<columnCount {
                if PQgetisnull(result, r, c) == 1 {
                    values.append(.null)
                } else {
                    let text = String(cString: PQgetvalue(result, r, c))
                    if integerColumns[Int(c)], let v = Int64(text) {
                        values.append(.int(v))
                    } else {
                        values.append(.text(text))
                    }
                }
            }
            rows.append(SQLRow(values: values))
        }
        return rows
    }

    static func firstLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
            .joined(separator: "; ")
    }
}

/// Calls `body` with the values as NUL-terminated C strings (NULL for SQL NULL), in text format.
private func withParameters<T>(_ binds: [SQLValue], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let owned: [UnsafeMutablePointer<CChar>?] = binds.map { value in
        switch value {
        case .null: nil
        case .int(let v): strdup(String(v))
        case .text(let s): strdup(s)
        }
    }
    defer { for pointer in owned { free(pointer) } }
    return body(owned.map { $0.map { UnsafePointer($0) } })
}

private func withCStrings<T>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> T) -> T {
    let owned = strings.map { strdup($0) }
    defer { for pointer in owned { free(pointer) } }
    return body(owned.map { $0.map { UnsafePointer($0) } } + [nil])
}

extension Substring {
    func trimmingCharacters() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

#if canImport(Glibc)
import Glibc
#endif
