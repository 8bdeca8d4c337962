import Core
import Foundation
import Logging

/// Process-wide logging from `LOG_LEVEL` and `LOG_FORMAT`: text lines or one JSON object per
/// line, to stderr. Call once, before anything logs.
public enum LogOutput {
    public static func bootstrap(_ configuration: Configuration) {
        let level: Logger.Level = switch configuration.logLevel {
        case .debug: .debug
        case .info: .info
        case .warning: .warning
        case .error: .error
        }
        LoggingSystem.bootstrap { label in
            var handler = LineLogHandler(label: label, format: configuration.logFormat)
            handler.logLevel = level
            return handler
        }
    }
}

/// One line per event on stderr, written with one `write(2)` (no stdio lock, no flush; the
/// request line is written for every request, on the event loop).
///
/// - text: `2026-11-30T01:02:03.456789Z info lmsvr: message key=value ...`, the metadata sorted
///   by key, a value quoted (as a JSON string) when it is empty or holds a space, a quote, `=` or
///   a control character, so no value can forge a field or a line. Built without `strftime` or
///   Foundation.
/// - json: an object with `time`, `level`, `message`, `logger` and the metadata as string fields.
struct LineLogHandler: LogHandler {
    let label: String
    let format: Configuration.LogFormat
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let micros = nowMicros()
        var line = switch format {
        case .text: Self.textLine(event: event, label: label, handlerMetadata: metadata, micros: micros)
        case .json: Self.jsonLine(event: event, label: label, handlerMetadata: metadata, micros: micros)
        }
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(2, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 {
                    if written < 0 && errno == EINTR { continue }
                    return // stderr is gone: nothing better to do with a log line
                }
                offset += written
            }
        }
    }

    static func merged(_ handlerMetadata: Logger.Metadata, _ event: LogEvent) -> Logger.Metadata {
        guard let own = event.metadata, !own.isEmpty else { return handlerMetadata }
        // Most loggers carry no metadata of their own: merging into an empty dictionary still
        // copied the event's (the request line's six fields) into a new one.
        return handlerMetadata.isEmpty ? own : handlerMetadata.merging(own, uniquingKeysWith: { $1 })
    }

    static func textLine(event: LogEvent, label: String, handlerMetadata: Logger.Metadata, micros: Int64) -> String {
        var line = Timestamp.iso8601(micros: micros)
        line.reserveCapacity(256)
        line += " "
        line += event.level.rawValue
        line += " "
        line += label
        line += ": "
        line += event.message.description
        for (key, field) in merged(handlerMetadata, event).sorted(by: { $0.key < $1.key }) {
            line += " "
            line += key
            line += "="
            let value = field.description
            let plain = !value.isEmpty && !value.utf8.contains { $0 == 32 || $0 == 34 || $0 == 61 || $0 < 32 }
            line += plain ? value : JSONText.quote(value)
        }
        line += "\n"
        return line
    }

    static func jsonLine(event: LogEvent, label: String, handlerMetadata: Logger.Metadata, micros: Int64) -> String {
        var object: [String: String] = [
            "time": Timestamp.iso8601(micros: micros), "level": event.level.rawValue,
            "message": "\(event.message)", "logger": label,
        ]
        for (key, value) in merged(handlerMetadata, event) { object[key] = "\(value)" }
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return "" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
