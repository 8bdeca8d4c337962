import Foundation
import SQLStore
import SQLiteStore
import Testing

/// Text binds hand SQLite the string's own UTF-8 bytes: every string comes back as it went in,
/// the empty one as '' (not NULL).
@Suite("SQLite text binds")
struct SQLiteBindTests {
    @Test func textRoundTripsByteForByte() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("binds-\(UUID().uuidString).db").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let database = try await SQLiteDatabase.open(path: path)
        let samples = ["", "a", "llama3:8b", "fifteen_bytes__", "sixteen_bytes___", "héllo wörld ✓ 模型",
                       String(repeating: "x", count: 5_000), "a\u{0}b"]
        for text in samples {
            let rows = try await database.withConnection { connection in
                try connection.execute("SELECT $1, typeof($1), length(CAST($1 AS BLOB))", [.text(text)])
            }
            let row = try #require(rows.first)
            #expect(row.values[1] == .text("text"), "\(text.debugDescription)")
            #expect(row.values[2] == .int(Int64(text.utf8.count)), "\(text.debugDescription)")
            // Read back as a C string, so an embedded NUL ends it there.
            #expect(row.values[0] == .text(String(text.prefix { $0 != "\u{0}" })), "\(text.debugDescription)")
        }
        await database.shutdown()
    }
}
