import Core
import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a key holder can see of their own account with their own key, no admin rights needed:
/// `GET /v1/usage` (this month's budget, spend per model and per day, the key's limits and
/// their use) and `GET /v1/usage/export` (their ledger rows, CSV or JSON). Only ever the
/// customer the key belongs to.
struct SelfServiceRoutes: Sendable {
    let store: any Store

    /// Open to every valid key, whatever API families its scope names.
    static let paths: Set<String> = ["/v1/usage", "/v1/usage/export"]
    /// Exports at once per process, and per customer: each holds a database connection while it
    /// reads and a scratch file until its response has been read.
    static let maxConcurrentExports = 4
    static let maxExportsPerCustomer = 1
    /// The longest range one export covers.
    static let maxExportDays = 366
    private static let runningExports = NIOLockedValueBox<[Int64: Int]>([:])
    /// A directory only this process can read (0700), made on first use.
    private static let scratchDirectory: String? = {
        var template = Array((NSTemporaryDirectory() + "/lmsvr-exports-XXXXXX").utf8CString)
        return template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }.map { String(cString: $0) }
    }()

    func register(on router: Router<GatewayContext>) {
        router.get("/v1/usage") { _, context in try await summary(context) }
        router.get("/v1/usage/export") { request, context in try await export(request, context) }
    }

    // MARK: Summary

    func summary(_ context: GatewayContext) async throws -> Response {
        guard let principal = context.principal else { throw GatewayError.missingKey }
        let now = nowMicros()
        let period = BudgetPeriod(containingMicros: now)
        let month = DayRange(start: UTCDay(year: period.year, month: period.month, day: 1), end: UTCDay(containingMicros: now))
        let status: BudgetStatus?, standing: KeyStanding?, customerUse: LimitUse?
        let daily: [DailyModelUsage]
        do {
            status = try await store.budgetStatus(customerId: principal.customerId, period: period)
            daily = try await store.dailyUsage(customerId: principal.customerId, range: month)
            standing = try await store.keyStanding(keyId: principal.keyId, nowMicros: now)
            customerUse = try await store.customerLimitUse(customerId: principal.customerId, nowMicros: now)
        } catch {
            throw GatewayError.databaseUnavailable
        }
        guard let status, let standing, let customerUse else { throw GatewayError.invalidKey }
        let report = UsageReport(customerId: principal.customerId, range: month, daily: daily)
        let body: [String: Any] = [
            "object": "usage", "customer_id": principal.customerId, "period": period.description,
            "budget_usd": status.budget?.decimalString ?? NSNull(), "spent_usd": status.spent.decimalString,
            "held_usd": status.held.decimalString, "remaining_usd": status.remaining?.decimalString ?? NSNull(),
            "limits": Self.json(customerUse),
            "by_model": report.byModel.map {
                ["model": $0.model, "requests": $0.requests, "prompt_tokens": $0.promptTokens,
                 "completion_tokens": $0.completionTokens, "cost_usd": $0.cost.decimalString] as [String: Any]
            },
            "by_day": report.byDay.map { ["day": $0.day.description, "requests": $0.requests, "cost_usd": $0.cost.decimalString] },
            "daily": daily.map {
                ["day": $0.day.description, "model": $0.model, "requests": $0.requests, "cost_usd": $0.cost.decimalString] as [String: Any]
            },
            "key": Self.json(standing),
        ]
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: JSONText.encode(body)))
    }

    static func json(_ use: LimitUse) -> [String: Any] {
        func limit(_ value: Int64?) -> Any { value.map { $0 as Any } ?? NSNull() }
        return [
            "requests_per_minute": limit(use.limits.requestsPerMinute), "tokens_per_minute": limit(use.limits.tokensPerMinute),
            "concurrency": limit(use.limits.concurrency), "requests_in_last_minute": use.requests,
            "tokens_in_last_minute": use.tokens, "in_flight": use.inFlight,
        ]
    }

    static func json(_ standing: KeyStanding) -> [String: Any] {
        let key = standing.key
        var remaining: Any = NSNull()
        if let budget = key.monthlyBudget, let spent = standing.spent, let held = standing.held {
            remaining = (budget - spent - held).decimalString
        }
        return [
            "id": key.id, "name": key.name ?? NSNull(), "prefix": key.displayPrefix,
            "expires_at": key.expiresAtMicros.map { Timestamp.iso8601(micros: $0) } ?? NSNull(),
            "apis": key.scope.apis.map { APIFamily.allCases.filter($0.contains).map(\.rawValue) } ?? NSNull(),
            "models": key.scope.models ?? NSNull(),
            "budget_usd": key.monthlyBudget?.decimalString ?? NSNull(), "spent_usd": standing.spent?.decimalString ?? NSNull(),
            "held_usd": standing.held?.decimalString ?? NSNull(), "remaining_usd": remaining, "limits": json(standing.use),
        ]
    }

    // MARK: Export

    /// The customer's ledger rows over whole UTC days (`start`, `end`: YYYY-MM-DD, default this
    /// month), written to a temporary file first so that a slow reader never holds a database
    /// connection, then streamed.
    func export(_ request: Request, _ context: GatewayContext) async throws -> Response {
        guard let principal = context.principal else { throw GatewayError.missingKey }
        let query = request.uri.queryParameters
        let formatText = query["format"].map(String.init) ?? "csv"
        guard let format = UsageExportFormat(rawValue: formatText) else {
            throw GatewayError.invalidRequest("format must be csv or json")
        }
        let today = UTCDay(containingMicros: nowMicros())
        func day(_ name: String, default value: UTCDay) throws(GatewayError) -> UTCDay {
            guard let text = query[name[...]] else { return value }
            guard let parsed = UTCDay(parsing: String(text)) else { throw .invalidRequest("\(name) must be a date, YYYY-MM-DD") }
            return parsed
        }
        let start = try day("start", default: UTCDay(year: today.year, month: today.month, day: 1)!)
        let end = try day("end", default: today)
        guard start <= end else { throw GatewayError.invalidRequest("start must not be after end") }
        guard end.daysSinceEpoch - start.daysSinceEpoch < Self.maxExportDays else {
            throw GatewayError.invalidRequest("an export covers at most \(Self.maxExportDays) days: split the range")
        }
        guard let directory = Self.scratchDirectory else { throw GatewayError.internalError("no scratch directory for exports") }
        guard Self.claimSlot(principal.customerId) else {
            throw GatewayError.rateLimited(LimitRefusal(subject: .customer(principal.customerId), kind: .concurrency,
                                                        limit: Int64(Self.maxExportsPerCustomer), retryAfterMicros: 1_000_000,
                                                        requestedTokens: 0))
        }
        // The slot is held until the response has been read (or abandoned), not just written.
        var slotHandedOver = false
        defer { if !slotHandedOver { Self.releaseSlot(principal.customerId) } }
        let path = directory + "/\(context.requestId).\(formatText)"
        let writer = try UsageFileWriter(path: path, format: format)
        do {
            _ = try await store.exportUsage(customerId: principal.customerId, range: DayRange(start: start, end: end)) {
                // The operator's server names stay out of what customers download.
                var row = $0
                row.server = nil
                try writer.append(row)
            }
            try writer.finish(durable: false)
        } catch {
            writer.abandon()
            unlink(path)
            if let error = error as? StoreError, error.isOutage { throw GatewayError.databaseUnavailable }
            throw GatewayError.internalError("the export could not be written")
        }
        // Opened, then unlinked: the file goes away when the response ends, however it ends.
        let descriptor = open(path, O_RDONLY)
        unlink(path)
        guard descriptor >= 0 else { throw GatewayError.internalError("the export could not be read") }
        let file = FileDescriptorBox(descriptor)
        let contentType = format == .csv ? "text/csv; charset=utf-8" : "application/json"
        let customerId = principal.customerId
        slotHandedOver = true
        return Response(status: .ok, headers: [
            .contentType: contentType,
            .contentDisposition: "attachment; filename=\"usage-\(start)-\(end).\(formatText)\"", .cacheControl: "no-store",
        ], body: ResponseBody { writer in
            defer {
                file.close()
                Self.releaseSlot(customerId)
            }
            while true {
                let chunk = try await NIOThreadPool.singleton.runIfActive { file.read(upTo: 256 << 10) }
                guard !chunk.isEmpty else { break }
                try await writer.write(ByteBuffer(bytes: chunk))
            }
            try await writer.finish(nil)
        })
    }

    static func claimSlot(_ customerId: Int64) -> Bool {
        runningExports.withLockedValue { running in
            guard running.values.reduce(0, +) < maxConcurrentExports, running[customerId, default: 0] < maxExportsPerCustomer
            else { return false }
            running[customerId, default: 0] += 1
            return true
        }
    }

    static func releaseSlot(_ customerId: Int64) {
        runningExports.withLockedValue { running in
            running[customerId, default: 1] -= 1
            if running[customerId] == 0 { running[customerId] = nil }
        }
    }
}

/// A file descriptor read by one response body, closed once.
final class FileDescriptorBox: Sendable {
    private let descriptor: NIOLockedValueBox<Int32>

    init(_ descriptor: Int32) { self.descriptor = NIOLockedValueBox(descriptor) }

    func read(upTo count: Int) -> [UInt8] {
        descriptor.withLockedValue { fd in
            guard fd >= 0 else { return [] }
            var bytes = [UInt8](repeating: 0, count: count)
            let n = bytes.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, count) }
            return n > 0 ? Array(bytes[..<n]) : []
        }
    }

    func close() {
        descriptor.withLockedValue { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }
}
