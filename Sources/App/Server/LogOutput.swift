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
        let json = configuration.logFormat == .json
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

/// One line per event: `2026-11-30T01:02:03.456789Z info lmsvr: message key=value ...`, the
/// metadata sorted by key, a value quoted when it holds a space, a quote or `=`. Built as bytes
/// and written to stderr with one `write(2)`: no `strftime`, no stdio lock, no Foundation (the
/// request line is written for every request, on the event loop).
struct TextLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = Self.line(event: event, label: label, handlerMetadata: metadata, micros: nowMicros())
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

    static func line(event: LogEvent, label: String, handlerMetadata: Logger.Metadata, micros: Int64) -> String {
        var line = Timestamp.iso8601(micros: micros)
        line += " "
        line += event.level.rawValue
        line += " "
        line += label
        line += ": "
        line += event.message.description
        let merged = (event.metadata ?? [:]).isEmpty ? handlerMetadata
            : handlerMetadata.merging(event.metadata!, uniquingKeysWith: { $1 })
        for key in merged.keys.sorted() {
            line += " "
            line += key
            line += "="
            let value = merged[key]!.description
            if value.isEmpty || value.utf8.contains(where: { $0 == 32 || $0 == 34 || $0 == 61 || $0 < 32 }) {
                line += "\""
                for character in value.unicodeScalars {
                    switch character {
                    case "\"": line += "\\\""
                    case "\\": line += "\\\\"
                    case "\n": line += "\\n"
                    default: line.unicodeScalars.append(character)
                    }
                }
                line += "\""
            } else {
                line += value
            }
        }
        line += "\n"
        return line
    }
}

/// One JSON object per line: time, level, message, label and the metadata as string fields.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var object: [String: String] = [
            "time": Timestamp.iso8601(micros: nowMicros()), "level": event.level.rawValue,
            "message": "\(event.message)", "logger": label,
        ]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) {
            object[key] = "\(value)"
        }
        guard var data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        data.append(UInt8(ascii: "\n"))
        FileHandle.standardError.write(data)
    }
}
