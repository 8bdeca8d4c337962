/// Every setting lmsvr reads, parsed and validated once at start-up.
///
/// Nothing else in lmsvr reads the environment. A bad value is a `ConfigurationError` that names
/// the variable; secrets are never part of a message.
public struct Configuration: Sendable {
    public enum LogFormat: String, Sendable { case text, json }
    public enum LogLevel: String, Sendable { case debug = "DEBUG", info = "INFO", warning = "WARNING", error = "ERROR" }

    public var databaseURL: String
    public var database: DatabaseLocation
    /// A PostgreSQL URL that reaches the server itself, not a pooler: the change listener
    /// (`LISTEN` needs a session of its own) and `migrate` (its advisory lock) use it.
    public var databaseDirectURL: String?
    /// How the pool's connections reach PostgreSQL (see `DatabasePoolMode`).
    public var databasePoolMode: DatabasePoolMode
    /// The Ollama servers (`OLLAMA_BASE_URL`, comma-separated, each `URL[;weight=N]`).
    public var ollamaServers: [OllamaServer]
    /// The first Ollama server: where the CLI's model commands look first.
    public var ollamaBaseURL: String { ollamaServers[0].url }
    /// The servers as logs and messages show them (no credentials or paths), comma-separated.
    public var ollamaServerNames: String { ollamaServers.map(\.displayName).joined(separator: ", ") }
    /// How often the servers' health, models and loaded models are checked (several servers only).
    public var ollamaCheckIntervalSeconds: Int
    public var openAIAPIKey: String?
    public var openAIBaseURL: String
    public var anthropicAPIKey: String?
    public var anthropicBaseURL: String
    public var host: String
    public var port: Int
    public var logLevel: LogLevel
    public var logFormat: LogFormat
    /// `ADMIN_TOKEN`: opens the operator dashboard at `/admin`; nil keeps it off.
    public var adminToken: String?
    /// What a request to a model without a price row costs.
    public var defaultPricePerRequest: Money
    /// Largest request body accepted, in bytes (413 beyond).
    public var maxBodyBytes: Int
    public var upstreamConnectTimeoutSeconds: Int
    /// How long the upstream may stay silent (before the first byte or between chunks): 504.
    public var upstreamReadTimeoutSeconds: Int
    /// How long a client connection may stay idle (no request in flight, or a request whose
    /// head or body stopped arriving) before it is closed; 0: never. A response being written,
    /// a stream however long, is not idle.
    public var clientIdleTimeoutSeconds: Int
    /// Output tokens held (and given to the upstream as its limit) for a request that sets no
    /// limit of its own.
    public var defaultMaxOutputTokens: Int64
    /// The most output tokens any one request may ask for; larger limits are lowered to it.
    public var maxOutputTokens: Int64
    /// Tokens a chat template may add to a prompt around its text (BOS, generation prompt,
    /// tool instructions), held for every request.
    public var promptOverheadTokens: Int64
    /// Tokens a chat template adds per message (role markers), held for every message.
    public var messageOverheadTokens: Int64
    /// The most tokens one image can cost: what is held per image, whatever its size.
    public var imageTokens: Int64
    /// What clients may ask of Ollama's model loading (see `OllamaOptionPolicy`).
    public var ollamaOptions: OllamaOptionPolicy
    /// How long a hold lives unless its process extends it: live requests' holds are extended
    /// while they run, so this only decides how soon a dead process's holds are released.
    public var holdExpirySeconds: Int
    /// How long cached keys and prices may be used, on either backend, while its change feed is up
    /// (PostgreSQL: LISTEN/NOTIFY; SQLite: the data-version poll); 0 disables the cache.
    public var cacheTTLSeconds: Double
    public var databasePoolSize: Int
    public var databasePoolWaitMillis: Int
    /// How long SIGTERM waits for in-flight requests and streams.
    public var shutdownGraceSeconds: Int
    /// Where settles the database cannot take yet are kept (see `SettleJournal`).
    public var journalDirectory: String
    /// How many bytes of settles may wait in the journal before new requests are refused.
    public var journalMaxBytes: Int
    public var upstreamMaxConnections: Int
    /// SQLite durability: `FULL` (every commit fsynced: no settled charge is lost even on power
    /// loss) or `NORMAL` (WAL commits fsynced at checkpoints: much faster, may lose the last
    /// commits on power loss, never on a process crash).
    public var sqliteSynchronous: SQLiteSynchronous
    /// How long a SQLite write waits for another process's lock before it fails (a settle then
    /// goes to the journal).
    public var sqliteBusyTimeoutMillis: Int

    public enum SQLiteSynchronous: String, Sendable { case full = "FULL", normal = "NORMAL" }

    /// `session`: each pooled connection is a server session (direct, or a pooler in session
    /// mode), so statements are prepared once per connection. `transaction`: a pooler hands each
    /// transaction whichever server connection is free (PgBouncer's transaction mode, the pooled
    /// endpoints of managed PostgreSQL), so nothing may outlive a transaction: statements are
    /// sent unnamed, parsed each time.
    public enum DatabasePoolMode: String, Sendable { case session, transaction }

    /// The connection string for the change listener and migrations: the direct URL if one is
    /// set, else the database's own (nil on SQLite).
    public var directConninfo: String? {
        guard case .postgres(let conninfo) = database else { return nil }
        return databaseDirectURL ?? conninfo
    }

    /// Why this configuration cannot keep a session of its own (for `LISTEN` or the migration
    /// lock): a transaction-mode pooler with no direct URL beside it. Nil when it can.
    public var missingDirectURL: String? {
        guard case .postgres = database, databasePoolMode == .transaction, databaseDirectURL == nil else { return nil }
        return "DATABASE_POOL_MODE=transaction needs DATABASE_DIRECT_URL (the server itself, not the pooler): "
            + "LISTEN and the migration lock need a session a transaction-mode pooler does not keep"
    }

    /// Every variable with its default, in the order `.env.example` and the README list them.
    public static let defaults: KeyValuePairs<String, String> = [
        "DATABASE_URL": DatabaseLocation.defaultURL,
        "DATABASE_DIRECT_URL": "",
        "DATABASE_POOL_MODE": "session",
        "OLLAMA_BASE_URL": "http://localhost:11434",
        "OLLAMA_CHECK_INTERVAL_SECONDS": "5",
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "ANTHROPIC_API_KEY": "",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
        "HOST": "0.0.0.0",
        "PORT": "8000",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
        "DEFAULT_PRICE_PER_REQUEST": "0.01",
        "MAX_BODY_BYTES": "16777216",
        "UPSTREAM_CONNECT_TIMEOUT_SECONDS": "5",
        "UPSTREAM_READ_TIMEOUT_SECONDS": "300",
        "CLIENT_IDLE_TIMEOUT_SECONDS": "120",
        "DEFAULT_MAX_OUTPUT_TOKENS": "4096",
        "MAX_OUTPUT_TOKENS": "32768",
        "PROMPT_OVERHEAD_TOKENS": "512",
        "MESSAGE_OVERHEAD_TOKENS": "16",
        "IMAGE_TOKENS": "4096",
        "OLLAMA_ALLOWED_OPTIONS": "",
        "OLLAMA_MAX_NUM_CTX": "",
        "OLLAMA_KEEP_ALIVE": "",
        "HOLD_EXPIRY_SECONDS": "900",
        "CACHE_TTL_SECONDS": "5",
        "DB_POOL_SIZE": "10",
        "DB_POOL_WAIT_MS": "2000",
        "SHUTDOWN_GRACE_SECONDS": "30",
        "JOURNAL_DIR": "",
        "JOURNAL_MAX_BYTES": "268435456",
        "UPSTREAM_MAX_CONNECTIONS": "512",
        "SQLITE_SYNCHRONOUS": "FULL",
        "SQLITE_BUSY_TIMEOUT_MS": "10000",
    ]

    /// Parses settings from an environment (the process environment merged over `.env`).
    public init(environment env: [String: String]) throws(ConfigurationError) {
        func value(_ name: String) -> String {
            if let v = env[name], !v.isEmpty { return v }
            return Configuration.defaults.first { $0.key == name }?.value ?? ""
        }
        func optional(_ name: String) -> String? {
            let v = env[name]?.trimmingWhitespace() ?? ""
            return v.isEmpty ? nil : v
        }
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
            let text = value(name).trimmingWhitespace()
            guard let n = Int(text), range.contains(n) else {
                throw ConfigurationError(variable: name,
                    message: "'\(text)' is not a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return n
        }
        func url(_ name: String) throws(ConfigurationError) -> String {
            var text = value(name).trimmingWhitespace()
            guard text.hasPrefix("http://") || text.hasPrefix("https://"), text.count > 8 else {
                throw ConfigurationError(variable: name, message: "'\(text)' is not an http:// or https:// URL")
            }
            while text.hasSuffix("/") { text.removeLast() }
            return text
        }

        self.databaseURL = value("DATABASE_URL")
        self.database = try DatabaseLocation(url: databaseURL)
        self.databaseDirectURL = optional("DATABASE_DIRECT_URL")
        if let direct = databaseDirectURL {
            guard case .postgres = database, case .postgres = try DatabaseLocation(url: direct, variable: "DATABASE_DIRECT_URL") else {
                throw ConfigurationError(variable: "DATABASE_DIRECT_URL", message: "is for PostgreSQL: a postgres:// URL beside a postgres:// DATABASE_URL")
            }
        }
        guard let poolMode = DatabasePoolMode(rawValue: value("DATABASE_POOL_MODE").trimmingWhitespace().lowercased()) else {
            throw ConfigurationError(variable: "DATABASE_POOL_MODE", message: "'\(value("DATABASE_POOL_MODE"))' is not session or transaction")
        }
        self.databasePoolMode = poolMode
        self.ollamaServers = try OllamaServer.parseList(value("OLLAMA_BASE_URL"))
        self.ollamaCheckIntervalSeconds = try integer("OLLAMA_CHECK_INTERVAL_SECONDS", 1...3600)
        self.openAIAPIKey = optional("OPENAI_API_KEY")
        self.openAIBaseURL = try url("OPENAI_BASE_URL")
        self.anthropicAPIKey = optional("ANTHROPIC_API_KEY")
        self.anthropicBaseURL = try url("ANTHROPIC_BASE_URL")
        self.host = value("HOST").trimmingWhitespace()
        self.port = try integer("PORT", 0...65535)
        guard let level = LogLevel(rawValue: value("LOG_LEVEL").trimmingWhitespace().uppercased()) else {
            throw ConfigurationError(variable: "LOG_LEVEL", message: "'\(value("LOG_LEVEL"))' is not DEBUG, INFO, WARNING or ERROR")
        }
        self.logLevel = level
        guard let format = LogFormat(rawValue: value("LOG_FORMAT").trimmingWhitespace().lowercased()) else {
            throw ConfigurationError(variable: "LOG_FORMAT", message: "'\(value("LOG_FORMAT"))' is not text or json")
        }
        self.logFormat = format
        self.adminToken = optional("ADMIN_TOKEN")
        if let token = adminToken, token.utf8.count < 24 {
            throw ConfigurationError(variable: "ADMIN_TOKEN", message: "is shorter than 24 characters: use a long random value (openssl rand -hex 24)")
        }
        do {
            self.defaultPricePerRequest = try Money(parsing: value("DEFAULT_PRICE_PER_REQUEST"))
        } catch {
            throw ConfigurationError(variable: "DEFAULT_PRICE_PER_REQUEST", message: error.description)
        }
        self.maxBodyBytes = try integer("MAX_BODY_BYTES", 1024...1_073_741_824)
        self.upstreamConnectTimeoutSeconds = try integer("UPSTREAM_CONNECT_TIMEOUT_SECONDS", 1...600)
        self.upstreamReadTimeoutSeconds = try integer("UPSTREAM_READ_TIMEOUT_SECONDS", 1...86_400)
        self.clientIdleTimeoutSeconds = try integer("CLIENT_IDLE_TIMEOUT_SECONDS", 0...86_400)
        self.defaultMaxOutputTokens = Int64(try integer("DEFAULT_MAX_OUTPUT_TOKENS", 1...10_000_000))
        self.maxOutputTokens = Int64(try integer("MAX_OUTPUT_TOKENS", 1...10_000_000))
        if defaultMaxOutputTokens > maxOutputTokens {
            throw ConfigurationError(variable: "DEFAULT_MAX_OUTPUT_TOKENS", message: "must not exceed MAX_OUTPUT_TOKENS (\(maxOutputTokens))")
        }
        self.promptOverheadTokens = Int64(try integer("PROMPT_OVERHEAD_TOKENS", 0...1_000_000))
        self.messageOverheadTokens = Int64(try integer("MESSAGE_OVERHEAD_TOKENS", 0...100_000))
        self.imageTokens = Int64(try integer("IMAGE_TOKENS", 1...1_000_000))
        let allowed = Set(value("OLLAMA_ALLOWED_OPTIONS").split(separator: ",").map { $0.trimmingWhitespace().lowercased() }
            .filter { !$0.isEmpty })
        if let unknown = allowed.subtracting(OllamaOptionPolicy.governed).sorted().first {
            throw ConfigurationError(variable: "OLLAMA_ALLOWED_OPTIONS", message:
                "'\(unknown)' is not one of \(OllamaOptionPolicy.governed.sorted().joined(separator: ", "))")
        }
        var maxNumCtx: Int64?
        if let text = optional("OLLAMA_MAX_NUM_CTX") {
            guard let n = Int64(text), n >= 1 else {
                throw ConfigurationError(variable: "OLLAMA_MAX_NUM_CTX", message: "'\(text)' is not a positive whole number")
            }
            maxNumCtx = n
        }
        let keepAlive = optional("OLLAMA_KEEP_ALIVE")
        if let keepAlive, Int64(keepAlive) == nil, !Self.isGoDuration(keepAlive) {
            throw ConfigurationError(variable: "OLLAMA_KEEP_ALIVE", message: "'\(keepAlive)' is not a number of seconds or a duration like 10m or 1h30m")
        }
        self.ollamaOptions = OllamaOptionPolicy(allowed: allowed, maxNumCtx: maxNumCtx, keepAlive: keepAlive)
        self.holdExpirySeconds = try integer("HOLD_EXPIRY_SECONDS", 10...604_800)
        let ttlText = value("CACHE_TTL_SECONDS").trimmingWhitespace()
        guard let ttl = Double(ttlText), ttl >= 0, ttl <= 3600 else {
            throw ConfigurationError(variable: "CACHE_TTL_SECONDS", message: "'\(ttlText)' is not a number of seconds from 0 to 3600")
        }
        self.cacheTTLSeconds = ttl
        self.databasePoolSize = try integer("DB_POOL_SIZE", 1...1000)
        self.databasePoolWaitMillis = try integer("DB_POOL_WAIT_MS", 1...600_000)
        self.shutdownGraceSeconds = try integer("SHUTDOWN_GRACE_SECONDS", 0...3600)
        self.journalDirectory = optional("JOURNAL_DIR") ?? database.defaultJournalDirectory
        self.journalMaxBytes = try integer("JOURNAL_MAX_BYTES", 1024...(1 << 40))
        self.upstreamMaxConnections = try integer("UPSTREAM_MAX_CONNECTIONS", 1...100_000)
        let synchronous = value("SQLITE_SYNCHRONOUS").trimmingWhitespace().uppercased()
        guard let level = SQLiteSynchronous(rawValue: synchronous) else {
            throw ConfigurationError(variable: "SQLITE_SYNCHRONOUS", message: "'\(synchronous)' is not FULL or NORMAL")
        }
        self.sqliteSynchronous = level
        self.sqliteBusyTimeoutMillis = try integer("SQLITE_BUSY_TIMEOUT_MS", 1...600_000)
    }

    /// A Go duration as Ollama's `keep_alive` reads it: `-1h`, `10m`, `1h30m`, `2.5s`.
    static func isGoDuration(_ text: String) -> Bool {
        var rest = Substring(text)
        if rest.hasPrefix("-") { rest = rest.dropFirst() }
        guard !rest.isEmpty else { return false }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCIIDigit || $0 == "." }
            guard !number.isEmpty, Double(number) != nil else { return false }
            rest = rest.dropFirst(number.count)
            // Two-letter units first, so "ms" is not read as "m".
            guard let unit = ["ns", "us", "µs", "ms", "s", "m", "h"].first(where: { rest.hasPrefix($0) }) else { return false }
            rest = rest.dropFirst(unit.count)
        }
        return true
    }
}

/// Reads a `.env` file: `KEY=value` lines, `#` comments, optional `export `, optional quotes.
public enum DotEnv {
    public static func parse(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for rawLine in text.split(whereSeparator: \.isNewline) {
            var line = Substring(rawLine.trimmingWhitespace())
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = line.dropFirst(7) }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingWhitespace()
            var value = line[line.index(after: eq)...].trimmingWhitespace()
            if value.count >= 2, let first = value.first, first == "\"" || first == "'", value.last == first {
                value = String(value.dropFirst().dropLast())
            } else if let hash = value.range(of: " #") {
                value = String(value[..<hash.lowerBound]).trimmingWhitespace()
            }
            guard !key.isEmpty else { continue }
            result[key] = value
        }
        return result
    }

    /// `.env` (if any) overlaid by the process environment, which wins.
    public static func merged(dotEnvContents: String?, environment: [String: String]) -> [String: String] {
        var merged = dotEnvContents.map(parse) ?? [:]
        for (k, v) in environment { merged[k] = v }
        return merged
    }
}
