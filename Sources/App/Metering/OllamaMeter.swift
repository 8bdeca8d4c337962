import Foundation
import NIOCore

/// Token counts and the end state of an Ollama response, read from its final `done` object.
///
/// Ollama leaves zero counts out of the JSON (`omitempty`), so a missing count reads as 0.
struct OllamaFinal: Sendable, Equatable {
    var promptEvalCount: Int64
    var evalCount: Int64
    var doneReason: String?

    init(promptEvalCount: Int64 = 0, evalCount: Int64 = 0, doneReason: String? = nil) {
        self.promptEvalCount = promptEvalCount
        self.evalCount = evalCount
        self.doneReason = doneReason
    }

    /// Reads the counts from a parsed final object.
    init(_ object: [String: Any]) {
        self.promptEvalCount = (object["prompt_eval_count"] as? NSNumber)?.int64Value ?? 0
        self.evalCount = (object["eval_count"] as? NSNumber)?.int64Value ?? 0
        self.doneReason = object["done_reason"] as? String
    }
}

/// Watches an NDJSON stream from Ollama as it passes through, without changing or holding it:
/// counts content chunks (about one token each) and finds the final `done:true` object or an
/// `{"error":…}` line. Pure state, fed chunk by chunk; chunks may split lines anywhere.
struct OllamaStreamMeter: Sendable {
    private(set) var chunks = 0
    private(set) var final: OllamaFinal?
    private(set) var errorMessage: String?
    private var partial: [UInt8] = []

    mutating func consume(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { bytes in
            var start = 0
            for i in 0..<bytes.count where bytes[i] == UInt8(ascii: "\n") {
                if partial.isEmpty {
                    line(UnsafeRawBufferPointer(rebasing: bytes[start..<i]))
                } else {
                    partial.append(contentsOf: bytes[start..<i])
                    let whole = partial
                    partial.removeAll(keepingCapacity: true)
                    whole.withUnsafeBytes { line($0) }
                }
                start = i + 1
            }
            if start < bytes.count { partial.append(contentsOf: bytes[start...]) }
        }
    }

    /// Handles a last line that had no newline.
    mutating func finish() {
        guard !partial.isEmpty else { return }
        let whole = partial
        partial.removeAll()
        whole.withUnsafeBytes { line($0) }
    }

    private mutating func line(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 1 else { return }
        // Only the rare lines that may be final or an error are parsed; content chunks are counted.
        let mayBeFinal = bytes.containsSubsequence("\"done\"") && !bytes.containsSubsequence("\"done\":false")
        let mayBeError = bytes.containsSubsequence("\"error\"")
        guard mayBeFinal || mayBeError else {
            chunks += 1
            return
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            chunks += 1
            return
        }
        if let error = object["error"] {
            errorMessage = (error as? String) ?? String(describing: error)
        } else if (object["done"] as? Bool) == true {
            final = OllamaFinal(object)
        } else {
            chunks += 1
        }
    }
}

extension UnsafeRawBufferPointer {
    func containsSubsequence(_ needle: StaticString) -> Bool {
        let n = needle.utf8CodeUnitCount
        guard n > 0, count >= n else { return false }
        let first = needle.utf8Start[0]
        var i = 0
        while i <= count - n {
            if self[i] == first {
                var j = 1
                while j < n && self[i + j] == needle.utf8Start[j] { j += 1 }
                if j == n { return true }
            }
            i += 1
        }
        return false
    }
}
