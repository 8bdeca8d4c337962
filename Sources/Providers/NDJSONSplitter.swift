import JSONKit

/// Splits an NDJSON byte stream into whole lines, whatever the chunking.
public struct NDJSONSplitter: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// Appends bytes and returns the complete lines, each without its newline.
    public mutating func lines(_ bytes: some Sequence<UInt8>) -> [ArraySlice<UInt8>] {
        pending.append(contentsOf: bytes)
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        for i in pending.indices where pending[i] == 0x0A {
            lines.append(pending[start..<i])
            start = i + 1
        }
        // The slices keep the old buffer alive; the remainder starts a new one.
        if start > 0 { pending = Array(pending[start...]) }
        return lines
    }

    /// A last line without a newline, if any.
    public mutating func rest() -> ArraySlice<UInt8>? {
        defer { pending = [] }
        return pending.isEmpty ? nil : pending[...]
    }

    /// Appends bytes and returns the complete lines that are JSON values (others are skipped).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [JSONValue] {
        lines(bytes).compactMap(Self.value)
    }

    /// A last line without a newline, parsed.
    public mutating func finish() -> [JSONValue] {
        rest().flatMap(Self.value).map { [$0] } ?? []
    }

    public static func value(_ line: ArraySlice<UInt8>) -> JSONValue? {
        guard line.count > 1 else { return nil }
        return (try? JSONDocument.parse(Array(line)))?.root
    }
}
