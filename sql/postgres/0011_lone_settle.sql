-- A lone settle in fewer statements. At concurrency 1 (and for every request that finishes
-- alone) each settle is a batch of one, and lmsvr_settle runs about seven statements for it, four
-- of them reading the batch's JSON again (jsonb_to_recordset), where a batch of one needs three
-- writes and the ledger's insert. A batch of one whose hold is open and took no tokens from a
-- token limit (the usual case) is now settled by those four statements, under the same locks in
-- the same order (the customer's period row, then the key's month); everything else (no hold,
-- already settled, tokens to give back, several rows) goes to 0010's function as it was, renamed
-- lmsvr_settle_general.
ALTER FUNCTION lmsvr_settle(JSONB) RENAME TO lmsvr_settle_general;

CREATE FUNCTION lmsvr_settle(p_rows JSONB) RETURNS TABLE (request_id TEXT, result TEXT) LANGUAGE plpgsql AS $$
DECLARE
    x RECORD;
    h RECORD;
BEGIN
    IF jsonb_array_length(p_rows) = 1 THEN
        SELECT * INTO x FROM jsonb_to_record(p_rows -> 0) AS r(request_id TEXT, customer_id BIGINT, key_id BIGINT,
            endpoint TEXT, dialect TEXT, provider TEXT, model TEXT, http_status BIGINT, outcome TEXT, prompt_tokens BIGINT,
            completion_tokens BIGINT, cached_tokens BIGINT, token_source TEXT, cost_nanos BIGINT,
            price_per_request_nanos BIGINT, price_per_model_nanos BIGINT, price_input_per_1m_nanos BIGINT,
            price_output_per_1m_nanos BIGINT, price_cached_input_per_1m_nanos BIGINT, price_source TEXT, latency_us BIGINT,
            ttfb_us BIGINT, created_us BIGINT, server TEXT);
        DELETE FROM holds d WHERE d.id = x.request_id AND d.tokens = 0
            RETURNING d.period, d.amount_nanos, d.key_nanos INTO h;
        IF FOUND THEN
            INSERT INTO budget_periods AS b (customer_id, period, spent_nanos, held_nanos)
                VALUES (x.customer_id, h.period, x.cost_nanos, h.amount_nanos)
                ON CONFLICT (customer_id, period) DO UPDATE
                SET held_nanos = b.held_nanos - EXCLUDED.held_nanos, spent_nanos = b.spent_nanos + EXCLUDED.spent_nanos;
            -- The key's month if it is kept, whether or not the hold took a share of it (0010).
            IF x.key_id IS NOT NULL THEN
                UPDATE key_periods k SET held_nanos = GREATEST(0, k.held_nanos - h.key_nanos),
                    spent_nanos = k.spent_nanos + x.cost_nanos
                    WHERE k.key_id = x.key_id AND k.period = h.period;
            END IF;
            INSERT INTO usage (request_id, customer_id, key_id, endpoint, dialect, provider, model, http_status, outcome,
                prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos,
                price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_cached_input_per_1m_nanos,
                price_source, latency_us, ttfb_us, created_us, period, server)
            VALUES (x.request_id, x.customer_id, x.key_id, x.endpoint, x.dialect, x.provider, x.model, x.http_status,
                x.outcome, x.prompt_tokens, x.completion_tokens, x.cached_tokens, x.token_source, x.cost_nanos,
                h.amount_nanos, x.price_per_request_nanos, x.price_per_model_nanos, x.price_input_per_1m_nanos,
                x.price_output_per_1m_nanos, x.price_cached_input_per_1m_nanos, x.price_source, x.latency_us, x.ttfb_us,
                x.created_us, h.period, x.server);
            request_id := x.request_id;
            result := 'settled';
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM lmsvr_settle_general(p_rows);
END $$;
