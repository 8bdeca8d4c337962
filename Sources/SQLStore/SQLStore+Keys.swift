import Core

extension SQLStore {
    static var keyColumns: String {
        """
        id, customer_id, name, display_prefix, created_us, revoked_us, expires_us, previous_expires_us, last_used_us, \
        apis, models, rpm, tpm, concurrency, monthly_budget_nanos
        """
    }

    static func key(from row: SQLRow) throws -> KeyRecord {
        KeyRecord(id: try row.int(0), customerId: try row.int(1), name: row.optionalText(2),
                  displayPrefix: try row.text(3), createdAtMicros: try row.int(4), revokedAtMicros: try row.optionalInt(5),
                  expiresAtMicros: try row.optionalInt(6), previousExpiresAtMicros: try row.optionalInt(7),
                  lastUsedAtMicros: try row.optionalInt(8),
                  scope: KeyScope(apisText: row.optionalText(9), modelsText: row.optionalText(10)),
                  limits: RateLimits(requestsPerMinute: try row.optionalInt(11), tokensPerMinute: try row.optionalInt(12),
                                     concurrency: try row.optionalInt(13)),
                  monthlyBudget: try row.optionalInt(14).map(Money.init(nanos:)))
    }

    public func createKey(customerId: Int64, options: KeyOptions, nowMicros: Int64) async throws -> NewKey? {
        let plaintext = APIKey.generate()
        let hash = APIKey.hash(plaintext)
        let prefix = APIKey.displayPrefix(of: plaintext)
        return try await write { c in
            guard try !c.execute("SELECT 1 FROM customers WHERE id = $1", .int(customerId)).isEmpty else { return nil }
            let rows = try c.execute(
                """
                INSERT INTO api_keys (customer_id, name, key_hash, display_prefix, created_us, expires_us, apis, models) \
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING \(Self.keyColumns)
                """,
                .int(customerId), .optional(options.name), .text(hash), .text(prefix), .int(nowMicros),
                .optional(options.expiresAtMicros), .optional(options.scope.apisText), .optional(options.scope.modelsText))
            return NewKey(record: try Self.key(from: rows[0]), plaintext: plaintext)
        }
    }

    public func rotateKey(id: Int64, graceMicros: Int64, nowMicros: Int64) async throws -> NewKey? {
        let plaintext = APIKey.generate()
        let hash = APIKey.hash(plaintext)
        let prefix = APIKey.displayPrefix(of: plaintext)
        return try await write { c in
            // The current secret becomes the previous one (a secret rotated out before is dropped
            // now); its grace never outlives the key itself.
            let rows = try c.execute(
                """
                UPDATE api_keys SET previous_hash = key_hash, \
                previous_expires_us = CASE WHEN expires_us IS NOT NULL AND expires_us < $3 THEN expires_us ELSE $3 END, \
                key_hash = $2, display_prefix = $4 WHERE id = $1 AND revoked_us IS NULL RETURNING \(Self.keyColumns)
                """, .int(id), .text(hash), .int(nowMicros + graceMicros), .text(prefix))
            guard let row = rows.first else { return nil }
            try c.notifyChange(ChangeNotice.key(id).payload)
            return NewKey(record: try Self.key(from: row), plaintext: plaintext)
        }
    }

    public func revokeKey(id: Int64, nowMicros: Int64) async throws -> KeyRecord? {
        try await write { c in
            let rows = try c.execute(
                "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, $2) WHERE id = $1 RETURNING \(Self.keyColumns)",
                .int(id), .int(nowMicros))
            guard let row = rows.first else { return nil }
            try c.notifyChange(ChangeNotice.key(id).payload)
            return try Self.key(from: row)
        }
    }

    public func key(id: Int64) async throws -> KeyRecord? {
        try await read { c in
            try c.execute("SELECT \(Self.keyColumns) FROM api_keys WHERE id = $1", .int(id)).first.map(Self.key)
        }
    }

    public func listKeys(customerId: Int64) async throws -> [KeyRecord] {
        try await read { c in
            try c.execute("SELECT \(Self.keyColumns) FROM api_keys WHERE customer_id = $1 ORDER BY id", .int(customerId))
                .map(Self.key)
        }
    }

    public func setKeyScope(id: Int64, apis: Set<APIFamily>??, models: [String]??) async throws -> KeyRecord? {
        let scope = KeyScope(apis: apis ?? nil, models: models ?? nil)
        return try await write { c in
            let rows = try c.execute(
                """
                UPDATE api_keys SET apis = CASE WHEN $2 = 1 THEN $3 ELSE apis END, \
                models = CASE WHEN $4 = 1 THEN $5 ELSE models END WHERE id = $1 RETURNING \(Self.keyColumns)
                """, .int(id), .int(apis == nil ? 0 : 1), .optional(scope.apisText), .int(models == nil ? 0 : 1),
                .optional(scope.modelsText))
            guard let row = rows.first else { return nil }
            try c.notifyChange(ChangeNotice.key(id).payload)
            return try Self.key(from: row)
        }
    }

    public func setLimits(keyId: Int64, _ change: LimitChange) async throws -> KeyRecord? {
        let period = BudgetPeriod(containingMicros: nowMicros()).description
        let postgres = database.dialect == .postgres
        return try await write { c in
            let rows = try c.execute(
                "UPDATE api_keys SET \(Self.limitAssignments(budget: true)) WHERE id = $1 RETURNING \(Self.keyColumns)",
                [.int(keyId)] + Self.limitBinds(change))
            guard let row = rows.first else { return nil }
            let key = try Self.key(from: row)
            if key.monthlyBudget != nil {
                // A key's month is kept from when it is given a budget. Setting one (again) starts
                // the month from the truth: what the key spent this month, in the ledger (also
                // while it had no budget, when its settles may not have reached a month kept from
                // before), and what its requests in flight hold, which take a share of the month
                // now so that their settles and expiries give it back.
                //
                // Locks, in the order a settle takes them (the hold's row, then the customer's
                // period row, then the key's month): a settle of a marked hold waits for this to
                // commit, and one that got the period row first commits before the sums, which
                // then count it. (A batched settle deletes several holds in its own order, so it
                // can deadlock with the marking; PostgreSQL then aborts one and it is retried.)
                let mark = "UPDATE holds SET key_nanos = amount_nanos WHERE customer_id = $1 AND key_id = $2 AND period = $3 AND key_nanos = 0"
                try c.execute(mark, .int(key.customerId), .int(keyId), .text(period))
                // The period row is locked even when this month has none yet: the upsert waits for
                // a first admission of the month still in flight (which may be holding from this
                // key's month) instead of summing around it.
                try c.execute(
                    """
                    INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES ($1, $2, 0, 0) \
                    ON CONFLICT (customer_id, period) DO UPDATE SET held_nanos = budget_periods.held_nanos
                    """, .int(key.customerId), .text(period))
                // Marked again under the row's lock (on SQLite nothing can be new, so only here): an
                // admission that read the key before its budget was set and then queued for the
                // row committed its hold, without a share, after the first marking. Admissions
                // after this wait for the commit and read the key under the row's lock (0013).
                // This takes hold rows after the period row, against a settle's order: a settle
                // of such a hold, queued behind this for the period row, would deadlock with it
                // and be the one aborted, a second later. So this gives way instead: after 100 ms
                // it fails (55P03) and `write` runs set-limits again from the start.
                if postgres {
                    let previous = try c.execute("SELECT current_setting('lock_timeout')")[0].text(0)
                    _ = try c.execute("SELECT set_config('lock_timeout', '100ms', true)")
                    try c.execute(mark, .int(key.customerId), .int(keyId), .text(period))
                    _ = try c.execute("SELECT set_config('lock_timeout', $1, true)", .text(previous))
                }
                try c.execute(
                    """
                    INSERT INTO key_periods (key_id, period, spent_nanos, held_nanos) SELECT $1, $2, \
                    (SELECT COALESCE(SUM(cost_nanos), 0) FROM usage WHERE customer_id = $3 AND period = $2 AND key_id = $1), \
                    (SELECT COALESCE(SUM(key_nanos), 0) FROM holds WHERE customer_id = $3 AND period = $2 AND key_id = $1) \
                    ON CONFLICT (key_id, period) DO UPDATE SET spent_nanos = excluded.spent_nanos, held_nanos = excluded.held_nanos
                    """, .int(keyId), .text(period), .int(key.customerId))
            }
            try c.notifyChange(ChangeNotice.key(keyId).payload)
            return key
        }
    }

    public func setLimits(customerId: Int64, _ change: LimitChange) async throws -> Customer? {
        try await write { c in
            let rows = try c.execute(
                "UPDATE customers SET \(Self.limitAssignments(budget: false)) WHERE id = $1 RETURNING \(Self.customerColumns)",
                [.int(customerId)] + Self.limitBinds(change).dropLast(2))
            guard let row = rows.first else { return nil }
            try c.notifyChange(ChangeNotice.customer(customerId).payload)
            return try Self.customer(from: row)
        }
    }

    /// `col = CASE WHEN $flag = 1 THEN $value ELSE col END` per limit: one statement whatever is changed.
    static func limitAssignments(budget: Bool) -> String {
        var columns = ["rpm", "tpm", "concurrency"]
        if budget { columns.append("monthly_budget_nanos") }
        return columns.enumerated().map { i, column in
            "\(column) = CASE WHEN $\(2 + 2 * i) = 1 THEN $\(3 + 2 * i) ELSE \(column) END"
        }.joined(separator: ", ")
    }

    static func limitBinds(_ change: LimitChange) -> [SQLValue] {
        func pair(_ value: Int64??) -> [SQLValue] {
            guard let value else { return [.int(0), .null] }
            return [.int(1), .optional(value)]
        }
        return pair(change.requestsPerMinute) + pair(change.tokensPerMinute) + pair(change.concurrency)
            + pair(change.monthlyBudget.map { $0?.nanos })
    }

    public func principal(forKeyHash hash: String) async throws -> Principal? {
        try await read { c in
            try c.execute(
                """
                SELECT id, customer_id, revoked_us, expires_us, previous_expires_us, apis, models, \
                CASE WHEN key_hash = $1 THEN 1 ELSE 0 END FROM api_keys WHERE key_hash = $1 OR previous_hash = $1
                """, .text(hash)).first.map { row in
                var expires = try row.optionalInt(3)
                if try row.int(7) == 0 {
                    // A rotated-out secret: valid until its grace ends (or the key expires, if sooner).
                    let grace = try row.optionalInt(4) ?? 0
                    expires = min(expires ?? grace, grace)
                }
                return Principal(keyId: try row.int(0), customerId: try row.int(1), revoked: try row.optionalInt(2) != nil,
                                 expiresAtMicros: expires,
                                 scope: KeyScope(apisText: row.optionalText(5), modelsText: row.optionalText(6)))
            }
        }
    }

    public func recordKeyUse(_ lastUse: [Int64: Int64]) async throws {
        guard !lastUse.isEmpty else { return }
        // Not durable on SQLite: a last-use time lost to a power cut is only a little older.
        try await write(durable: false) { c in
            for (id, micros) in lastUse.sorted(by: { $0.key < $1.key }) {
                try c.execute("UPDATE api_keys SET last_used_us = $2 WHERE id = $1 AND (last_used_us IS NULL OR last_used_us < $2)",
                              .int(id), .int(micros))
            }
        }
    }
}
