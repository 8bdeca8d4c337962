import AsyncHTTPClient
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The benchmark harness's load generator for what wrk cannot measure. Prints one JSON object.
///
///     bench-driver open    --url U --body FILE [--header 'K: V']... --rate R --seconds S
///     bench-driver streams --url U --body FILE [--header ...] --count N [--repeat R] --pace-ms P
///     bench-driver memory  --url U --body FILE [--header ...] --pid P --steps 250,500,1000
///
/// `open`: a constant request rate (open loop). Each request's latency runs from the moment it
/// was due, not from when it was sent, so a slow server cannot hide its queue (no coordinated
/// omission). `streams`: N concurrent streams; time to first byte (response head), to first token
/// (first line or event carrying content), every gap between token chunks, and stalls (a gap
/// longer than twice the pace). `memory`: opens long-lived streams in steps and reads the
/// server's resident memory from `/proc/PID/status` after each step and after they close.
@main
struct BenchDriver {
    static func main() async throws {
        let options = try DriverOptions(CommandLine.arguments.dropFirst())
        var config = HTTPClient.Configuration(timeout: .init(connect: .seconds(5), read: .seconds(120)))
        config.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 4096)
        config.decompression = .disabled
        config.httpVersion = .http1Only
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        let result: [String: Any]
        do {
            switch options.mode {
            case "open": result = try await OpenLoop(options: options, client: client).run()
            case "streams": result = try await StreamProbe(options: options, client: client).run()
            case "memory": result = try await MemoryProbe(options: options, client: client).run()
            default: throw DriverError.usage("unknown mode \(options.mode)")
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
        let data = try JSONSerialization.data(withJSONObject: result, options: [.sortedKeys])
        FileHandle.standardOutput.write(data + Data("\n".utf8))
    }
}

enum DriverError: Error, CustomStringConvertible {
    case usage(String)
    var description: String {
        switch self { case .usage(let m): return "bench-driver: \(m)" }
    }
}

/// Command-line options shared by the modes.
struct DriverOptions: Sendable {
    var mode: String
    var url: String
    var body: ByteBuffer
    var headers: [(String, String)] = []
    var rate = 100.0
    var seconds = 5.0
    var count = 1
    var repeats = 1
    var paceMillis = 20
    var pid: Int32 = 0
    var steps: [Int] = [250, 500, 1000]
    var settleSeconds = 2.0

    init(_ arguments: ArraySlice<String>) throws {
        var args = Array(arguments)
        guard !args.isEmpty else { throw DriverError.usage("usage: bench-driver open|streams|memory --url U --body FILE ...") }
        mode = args.removeFirst()
        var url: String?, bodyPath: String?
        var i = 0
        func next() throws -> String {
            i += 1
            guard i < args.count else { throw DriverError.usage("\(args[i - 1]) needs a value") }
            return args[i]
        }
        while i < args.count {
            switch args[i] {
            case "--url": url = try next()
            case "--body": bodyPath = try next()
            case "--header":
                let h = try next()
                guard let colon = h.firstIndex(of: ":") else { throw DriverError.usage("bad header \(h)") }
                headers.append((String(h[..<colon]), h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            case "--rate": rate = Double(try next()) ?? rate
            case "--seconds": seconds = Double(try next()) ?? seconds
            case "--count": count = Int(try next()) ?? count
            case "--repeat": repeats = max(1, Int(try next()) ?? repeats)
            case "--pace-ms": paceMillis = Int(try next()) ?? paceMillis
            case "--pid": pid = Int32(try next()) ?? 0
            case "--steps": steps = try next().split(separator: ",").compactMap { Int($0) }
            case "--settle-seconds": settleSeconds = Double(try next()) ?? settleSeconds
            default: throw DriverError.usage("unknown option \(args[i])")
            }
            i += 1
        }
        guard let url, let bodyPath else { throw DriverError.usage("--url and --body are required") }
        self.url = url
        body = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: bodyPath)))
    }

    func request() -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/json")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        request.body = .bytes(body)
        return request
    }
}

/// Percentiles of a histogram of microseconds, as JSON numbers.
func summary(_ h: Histogram<UInt64>, prefix: String) -> [String: Any] {
    guard h.totalCount > 0 else { return ["\(prefix)_count": 0] }
    return [
        "\(prefix)_count": h.totalCount,
        "\(prefix)_p50_us": h.valueAtPercentile(50), "\(prefix)_p90_us": h.valueAtPercentile(90),
        "\(prefix)_p99_us": h.valueAtPercentile(99), "\(prefix)_p999_us": h.valueAtPercentile(99.9),
        "\(prefix)_max_us": h.max,
    ]
}

func newHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
}

extension ContinuousClock.Instant {
    /// Microseconds from `self` to `later`, never negative.
    func micros(to later: ContinuousClock.Instant) -> UInt64 {
        let d = later - self
        let us = d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
        return UInt64(max(0, us))
    }
}
