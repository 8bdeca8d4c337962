import Foundation

/// Runs the built `lmsvr` binary as a child process, the way an operator would.
public enum LmsvrProcess {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// The binary: `LMSVR_BIN`, or `.build/debug/lmsvr` in this checkout.
    public static var binary: String {
        if let path = ProcessInfo.processInfo.environment["LMSVR_BIN"], !path.isEmpty { return path }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug/lmsvr").path
    }

    /// Runs `lmsvr` with arguments and extra environment, in `directory` (a fresh temporary one by
    /// default, so no `.env` is picked up), and waits for it.
    public static func run(_ arguments: [String], environment: [String: String] = [:],
                           directory: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["LMSVR_TEST_POSTGRES_URL"] = nil
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let dir = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("lmsvr-cwd-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        process.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes to the end before waiting, so a large output cannot block the child.
        let group = DispatchGroup()
        nonisolated(unsafe) var outData = Data(), errData = Data()
        group.enter()
        DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        errData = err.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}
