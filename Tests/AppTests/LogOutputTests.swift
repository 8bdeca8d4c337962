@testable import App
import Logging
import Testing

/// The text log line is built by hand (it is written for every request): its shape and quoting.
@Suite("Log lines")
struct LogOutputTests {
    static func event(_ message: Logger.Message, _ metadata: Logger.Metadata?) -> LogEvent {
        LogEvent(level: .info, message: message, metadata: metadata, source: nil, file: #fileID, function: #function, line: 1)
    }

    @Test func aLineIsTimeLevelLabelMessageAndSortedFields() {
        let line = LineLogHandler.textLine(event: Self.event("request", ["status": "200", "path": "/api/chat", "method": "POST"]),
                                       label: "lmsvr", handlerMetadata: ["replica": "a"], micros: 1_790_812_800_123_456)
        #expect(line == "2026-10-01T00:00:00.123456Z info lmsvr: request method=POST path=/api/chat replica=a status=200\n")
    }

    @Test func valuesWithSpacesQuotesOrLineBreaksAreQuotedAndCannotForgeAField() {
        let line = LineLogHandler.textLine(event: Self.event("m", ["error": "bad \"x\" a=b\nstatus=200", "empty": ""]),
                                       label: "l", handlerMetadata: [:], micros: 0)
        #expect(line == "1970-01-01T00:00:00.000000Z info l: m empty=\"\" error=\"bad \\\"x\\\" a=b\\nstatus=200\"\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }
}
