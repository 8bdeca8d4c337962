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
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
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
