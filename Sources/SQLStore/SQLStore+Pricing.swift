import Core

extension SQLStore {
    static var priceColumns: String {
        "model, per_request_nanos, per_model_nanos, input_per_1m_nanos, output_per_1m_nanos, cached_input_per_1m_nanos, effective_from_us"
    }

    static func priceRecord(from row: SQLRow) throws -> PriceRecord {
        PriceRecord(
            model: try row.text(0),
            price: ModelPrice(perRequest: Money(nanos: try row.int(1)), perModel: Money(nanos: try row.int(2)),
                              inputPer1M: Money(nanos: try row.int(3)), outputPer1M: Money(nanos: try row.int(4)),
                              cachedInputPer1M: try row.optionalInt(5).map(Money.init(nanos:))),
            effectiveFromMicros: try row.int(6))
    }

    public func setPrice(model: String, price: ModelPrice, effectiveFromMicros: Int64) async throws -> PriceRecord {
        try await write { c in
            let rows = try c.execute(
                """
                INSERT INTO model_prices (model, per_request_nanos, per_model_nanos, input_per_1m_nanos, \
                output_per_1m_nanos, cached_input_per_1m_nanos, effective_from_us) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                RETURNING \(Self.priceColumns)
                """,
                .text(model), .int(price.perRequest.nanos), .int(price.perModel.nanos), .int(price.inputPer1M.nanos),
                .int(price.outputPer1M.nanos), .optional(price.cachedInputPer1M?.nanos), .int(effectiveFromMicros))
            try c.notifyChange(ChangeNotice.price(model).payload)
            return try Self.priceRecord(from: rows[0])
        }
    }

    public func priceInForce(models: [String], atMicros: Int64) async throws -> PriceInForce {
        // One statement, so one round trip on PostgreSQL: the newest row in force of the first
        // name that has one (joined to a one-row aggregate, so it may be absent), and the
        // earliest scheduled row of any of the names: the first name's row wins over the
        // second's, and a name without one falls through to the next.
        guard !models.isEmpty else { return PriceInForce(record: nil, nextChangeMicros: nil) }
        let names = models.indices.map { "$\($0 + 2)" }.joined(separator: ", ")
        let rank = models.indices.map { "WHEN $\($0 + 2) THEN \($0)" }.joined(separator: " ")
        let row = try await read { c in
            try c.execute(
                """
                SELECT p.*, n.next FROM \
                (SELECT MIN(effective_from_us) AS next FROM model_prices WHERE model IN (\(names)) AND effective_from_us > $1) n \
                LEFT JOIN (SELECT \(Self.priceColumns) FROM model_prices WHERE model IN (\(names)) AND effective_from_us <= $1 \
                ORDER BY CASE model \(rank) END, effective_from_us DESC, id DESC LIMIT 1) p ON 1 = 1
                """, [.int(atMicros)] + models.map(SQLValue.text))
        }.first
        guard let row else { return PriceInForce(record: nil, nextChangeMicros: nil) }
        return PriceInForce(record: row.optionalText(0) == nil ? nil : try Self.priceRecord(from: row),
                            nextChangeMicros: try row.optionalInt(7))
    }

    public func currentPrices(atMicros: Int64) async throws -> [PriceRecord] {
        try await read { c in
            try c.execute(
                """
                SELECT \(Self.priceColumns) FROM model_prices p WHERE effective_from_us <= $1 AND NOT EXISTS ( \
                SELECT 1 FROM model_prices q WHERE q.model = p.model AND q.effective_from_us <= $1 \
                AND (q.effective_from_us > p.effective_from_us OR (q.effective_from_us = p.effective_from_us AND q.id > p.id))) \
                ORDER BY model
                """, .int(atMicros)
            ).map(Self.priceRecord)
        }
    }

    public func upsertModelMetadata(_ models: [ModelMetadata]) async throws {
        try await write { c in
            for m in models {
                try c.execute(
                    """
                    INSERT INTO model_metadata (name, family, parameter_size, quantization, context_length, description, synced_us) \
                    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET family = excluded.family, \
                    parameter_size = excluded.parameter_size, quantization = excluded.quantization, \
                    context_length = excluded.context_length, description = COALESCE(excluded.description, model_metadata.description), \
                    synced_us = excluded.synced_us
                    """,
                    .text(m.name), .optional(m.family), .optional(m.parameterSize), .optional(m.quantization),
                    .optional(m.contextLength), .optional(m.description), .int(m.syncedAtMicros))
            }
        }
    }

    public func modelMetadata() async throws -> [ModelMetadata] {
        try await read { c in
            try c.execute(
                "SELECT name, family, parameter_size, quantization, context_length, description, synced_us FROM model_metadata ORDER BY name"
            ).map {
                ModelMetadata(name: try $0.text(0), family: $0.optionalText(1), parameterSize: $0.optionalText(2),
                              quantization: $0.optionalText(3), contextLength: try $0.optionalInt(4),
                              description: $0.optionalText(5), syncedAtMicros: try $0.int(6))
            }
        }
    }
}
