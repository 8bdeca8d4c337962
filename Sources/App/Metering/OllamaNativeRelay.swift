import Core
import JSONKit
import NIOCore
import Providers

/// Ollama NDJSON to an Ollama client: lines pass through untouched, each one read (content,
/// final counts, errors) on the way.
struct OllamaNativeRelay: StreamRelay {
    let contentType: String
    let chat: Bool
    let setup: RelaySetup
    private var splitter = NDJSONSplitter()
    private(set) var delivered = Delivered()
    private(set) var reachedLimit = false
    private(set) var usage: ReportedUsage?
    private(set) var errorMessage: String?
    private(set) var complete = false

    init(contentType: String, chat: Bool, setup: RelaySetup) {
        self.contentType = contentType
        self.chat = chat
        self.setup = setup
    }

    mutating func start() -> [UInt8] { [] }

    mutating func relay(_ chunk: ByteBuffer) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(chunk.readableBytes)
        for line in splitter.lines(chunk.readableBytesView) where !reachedLimit {
            if forward(line) {
                out.append(contentsOf: line)
                out.append(0x0A)
            }
        }
        return out
    }

    mutating func finish() -> [UInt8] {
        guard !reachedLimit, let line = splitter.rest(), forward(line) else { return [] }
        return Array(line) + [0x0A]
    }

    /// Meters one line; returns whether it goes to the client.
    private mutating func forward(_ line: ArraySlice<UInt8>) -> Bool {
        guard line.contains(where: { $0 != 0x20 && $0 != 0x0D && $0 != 0x09 }) else { return false }
        // Go writes `"done":false` on every content line; only other lines can be the end.
        guard let object = NDJSONSplitter.value(line) else { return true }
        if let error = object["error"], !error.isNull {
            errorMessage = error.string ?? error.rawText
            return true
        }
        delivered.textBytes += OllamaChunk.textBytes(object)
        if object["done"]?.bool == true {
            usage = OllamaFinal(object).usage
            complete = true
            return true
        }
        delivered.units += 1
        if delivered.units >= setup.outputLimit { reachedLimit = true }
        return true
    }

    mutating func cutOff() -> [UInt8] {
        let stamp = Timestamp.iso8601(micros: nowMicros())
        let final: JSON = chat
            ? ["model": .string(setup.model), "created_at": .string(stamp),
               "message": ["role": "assistant", "content": ""], "done_reason": "length", "done": true,
               "prompt_eval_count": .int(setup.promptEstimate), "eval_count": .int(delivered.units)]
            : ["model": .string(setup.model), "created_at": .string(stamp), "response": "", "done": true,
               "done_reason": "length", "prompt_eval_count": .int(setup.promptEstimate), "eval_count": .int(delivered.units)]
        return final.bytes + [0x0A]
    }

    func errorEvent(_ message: String) -> [UInt8] { (JSON(dictionaryLiteral: ("error", .string(message))).text + "\n").bytes }
}
