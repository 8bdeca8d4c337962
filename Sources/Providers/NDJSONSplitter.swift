import Foundation

/// Splits an NDJSON byte stream into parsed objects, whatever the chunking. Lines that are not
/// JSON objects are skipped.
public struct NDJSONSplitter: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [JSONObject] {
        pending.append(contentsOf: bytes)
        var objects: [JSONObject] = []
        var start = 0
        for i in pending.indices where pending[i] == 0x0A {
            if let object = Self.object(pending[start..<i]) { objects.append(object) }
            start = i + 1
        }
        pending.removeFirst(start)
        return objects
    }

    /// A last line without a newline.
    public mutating func finish() -> [JSONObject] {
        defer { pending = [] }
        return Self.object(pending[...]).map { [$0] } ?? []
    }

    static func object(_ line: ArraySlice<UInt8>) -> JSONObject? {
        guard line.count > 1 else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(line))) as? JSONObject
    }
}
