-- The ledger at scale: partitioned by month, with per-day rollups kept up to date by the
-- database itself; holds and settles as single statements (one round trip each).

-- 1. The ledger, partitioned by period (one partition per month, created ahead by the gateway;
--    the default partition takes anything else). Old months are archived by dropping theirs.
ALTER TABLE usage RENAME TO usage_before_partitioning;
ALTER INDEX usage_customer_time RENAME TO usage_before_partitioning_customer_time;
ALTER INDEX usage_customer_period RENAME TO usage_before_partitioning_customer_period;
DROP VIEW usage_readable;

CREATE SEQUENCE usage_row_id_seq;
SELECT setval('usage_row_id_seq', COALESCE((SELECT MAX(id) FROM usage_before_partitioning), 0) + 1, false);

CREATE TABLE usage (
    id                              BIGINT  NOT NULL DEFAULT nextval('usage_row_id_seq'),
    request_id                      TEXT    NOT NULL,
    customer_id                     BIGINT  NOT NULL,
    key_id                          BIGINT,
    period                          TEXT    NOT NULL,
    endpoint                        TEXT    NOT NULL,
    dialect                         TEXT    NOT NULL,
    provider                        TEXT    NOT NULL,
    model                           TEXT    NOT NULL,
    http_status                     BIGINT  NOT NULL,
    outcome                         TEXT    NOT NULL,
    prompt_tokens                   BIGINT  NOT NULL,
    completion_tokens               BIGINT  NOT NULL,
    cached_tokens                   BIGINT  NOT NULL,
    token_source                    TEXT    NOT NULL,
    cost_nanos                      BIGINT  NOT NULL,
    held_nanos                      BIGINT  NOT NULL,
    price_per_request_nanos         BIGINT  NOT NULL,
    price_per_model_nanos           BIGINT  NOT NULL,
    price_input_per_1m_nanos        BIGINT  NOT NULL,
    price_output_per_1m_nanos       BIGINT  NOT NULL,
    price_cached_input_per_1m_nanos BIGINT,
    price_source                    TEXT    NOT NULL,
    latency_us                      BIGINT  NOT NULL,
    ttfb_us                         BIGINT,
    created_us                      BIGINT  NOT NULL,
    -- A request's period is fixed (its hold's, or the month it began), so this keeps a request
    -- to one row.
    PRIMARY KEY (request_id, period)
) PARTITION BY LIST (period);
ALTER SEQUENCE usage_row_id_seq OWNED BY usage.id;
CREATE TABLE usage_default PARTITION OF usage DEFAULT;
CREATE INDEX usage_customer_time ON usage (customer_id, created_us);
CREATE INDEX usage_customer_period ON usage (customer_id, period);

-- Creates the partition of one month (YYYY-MM) unless it exists; rows of that month already in
-- the default partition move into it.
CREATE FUNCTION lmsvr_usage_partition(p_period TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    v_name TEXT := 'usage_' || replace(p_period, '-', '_');
BEGIN
    IF p_period !~ '^[0-9]{4}-[0-9]{2}$' THEN RAISE EXCEPTION 'bad period %', p_period; END IF;
    IF to_regclass(v_name) IS NOT NULL THEN RETURN; END IF;
    EXECUTE format('CREATE TABLE %I (LIKE usage INCLUDING DEFAULTS)', v_name);
    EXECUTE format('INSERT INTO %I SELECT * FROM usage_default WHERE period = %L', v_name, p_period);
    EXECUTE format('DELETE FROM usage_default WHERE period = %L', p_period);
    EXECUTE format('ALTER TABLE usage ATTACH PARTITION %I FOR VALUES IN (%L)', v_name, p_period);
END $$;

-- Removes one month from the ledger: its partition dropped whole (no row-by-row delete, no
-- trigger: the rollups stay), and its rows in the default partition, if any, deleted without
-- touching the rollups either.
CREATE FUNCTION lmsvr_usage_archive(p_period TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    v_name TEXT := 'usage_' || replace(p_period, '-', '_');
BEGIN
    IF p_period !~ '^[0-9]{4}-[0-9]{2}$' THEN RAISE EXCEPTION 'bad period %', p_period; END IF;
    DELETE FROM usage_default WHERE period = p_period;
    IF to_regclass(v_name) IS NOT NULL THEN
        EXECUTE format('DROP TABLE %I', v_name);
    END IF;
END $$;

SELECT lmsvr_usage_partition(p) FROM (SELECT DISTINCT period AS p FROM usage_before_partitioning) periods;
SELECT lmsvr_usage_partition(to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM'));
SELECT lmsvr_usage_partition(to_char((now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYY-MM'));

INSERT INTO usage SELECT id, request_id, customer_id, key_id, period, endpoint, dialect, provider, model, http_status,
    outcome, prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos,
    price_per_request_nanos, price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos,
    price_cached_input_per_1m_nanos, price_source, latency_us, ttfb_us, created_us
FROM usage_before_partitioning;
DROP TABLE usage_before_partitioning;

CREATE VIEW usage_readable AS
SELECT id, request_id, customer_id, key_id, period, endpoint, dialect, provider, model, http_status, outcome,
       prompt_tokens, completion_tokens, cached_tokens, token_source,
       cost_nanos::numeric / 1000000000 AS cost_usd,
       to_timestamp(created_us::double precision / 1000000) AS created_at
FROM usage;

-- 2. Rollups: per customer, UTC day (days since the epoch) and model, kept equal to the ledger's
--    sums by triggers on every insert and delete (archiving drops partitions: no trigger fires,
--    the rollups stay). Reports read these, never the ledger.
CREATE TABLE usage_daily (
    customer_id       BIGINT NOT NULL,
    day               BIGINT NOT NULL,
    model             TEXT   NOT NULL,
    requests          BIGINT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cached_tokens     BIGINT NOT NULL,
    cost_nanos        BIGINT NOT NULL,
    PRIMARY KEY (customer_id, day, model)
);

INSERT INTO usage_daily
SELECT customer_id, created_us / 86400000000, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(cached_tokens), SUM(cost_nanos)
FROM usage GROUP BY 1, 2, 3;

CREATE FUNCTION lmsvr_usage_rollup() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO usage_daily AS d
        SELECT customer_id, created_us / 86400000000, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
               SUM(cached_tokens), SUM(cost_nanos)
        FROM new_rows GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (customer_id, day, model) DO UPDATE SET
            requests = d.requests + EXCLUDED.requests, prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
            completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
            cached_tokens = d.cached_tokens + EXCLUDED.cached_tokens, cost_nanos = d.cost_nanos + EXCLUDED.cost_nanos;
    ELSE
        UPDATE usage_daily AS d SET
            requests = d.requests - o.requests, prompt_tokens = d.prompt_tokens - o.prompt_tokens,
            completion_tokens = d.completion_tokens - o.completion_tokens, cached_tokens = d.cached_tokens - o.cached_tokens,
            cost_nanos = d.cost_nanos - o.cost_nanos
        FROM (SELECT customer_id, created_us / 86400000000 AS day, model, COUNT(*) AS requests,
                     SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,
                     SUM(cached_tokens) AS cached_tokens, SUM(cost_nanos) AS cost_nanos
              FROM old_rows GROUP BY 1, 2, 3) o
        WHERE d.customer_id = o.customer_id AND d.day = o.day AND d.model = o.model;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_rollup_insert AFTER INSERT ON usage REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lmsvr_usage_rollup();
CREATE TRIGGER usage_rollup_delete AFTER DELETE ON usage REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lmsvr_usage_rollup();

-- 3. Holds, several of one customer at once, as one statement: admitted in order while they fit
--    (one that does not fit is skipped; a smaller one after it may still fit). The period row is
--    locked only while this runs, with no round trip inside; the commit does not wait for its
--    WAL flush (a hold lost to a server crash only means its settle charges without it).
CREATE FUNCTION lmsvr_hold(p_customer BIGINT, p_period TEXT, p_now BIGINT, p_expires BIGINT, p_ids TEXT[],
    p_amounts BIGINT[], p_keys BIGINT[], p_endpoints TEXT[], p_dialects TEXT[], p_providers TEXT[], p_models TEXT[])
RETURNS TABLE (admitted BOOLEAN[], budget BIGINT, spent BIGINT, held BIGINT) LANGUAGE plpgsql AS $$
DECLARE
    v_budget BIGINT;
    v_spent BIGINT;
    v_held BIGINT;
    v_ok BOOLEAN[] := '{}';
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT monthly_budget_nanos INTO v_budget FROM customers WHERE id = p_customer;
    SELECT b.spent_nanos, b.held_nanos INTO v_spent, v_held FROM budget_periods b
        WHERE b.customer_id = p_customer AND b.period = p_period FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES (p_customer, p_period, 0, 0)
            ON CONFLICT (customer_id, period) DO NOTHING;
        SELECT b.spent_nanos, b.held_nanos INTO v_spent, v_held FROM budget_periods b
            WHERE b.customer_id = p_customer AND b.period = p_period FOR UPDATE;
    END IF;
    FOR i IN 1 .. COALESCE(array_length(p_ids, 1), 0) LOOP
        IF v_budget IS NULL OR v_spent + v_held + p_amounts[i] <= v_budget THEN
            v_held := v_held + p_amounts[i];
            v_ok := v_ok || true;
        ELSE
            v_ok := v_ok || false;
        END IF;
    END LOOP;
    IF true = ANY (v_ok) THEN
        UPDATE budget_periods SET held_nanos = v_held WHERE customer_id = p_customer AND period = p_period;
        INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect,
                           provider, model)
        SELECT r.id, p_customer, r.key_id, p_period, r.amount, p_now, p_expires, r.endpoint, r.dialect, r.provider, r.model
        FROM unnest(p_ids, p_amounts, p_keys, p_endpoints, p_dialects, p_providers, p_models, v_ok)
            AS r(id, amount, key_id, endpoint, dialect, provider, model, ok)
        WHERE r.ok;
    END IF;
    RETURN QUERY SELECT v_ok, v_budget, v_spent, v_held;
END $$;

-- 4. Settles, any number at once, as one statement and one durable commit. Each drops its hold
--    and charges the hold's period; a settle whose hold was released as expired replaces that
--    row and charges anyway; one already settled changes nothing; one that never had a hold
--    charges the month it began. Period rows are updated in one order (customer, period), so
--    concurrent batches cannot deadlock. Returns each request's outcome: settled,
--    settled_without_hold or already_settled.
CREATE FUNCTION lmsvr_settle(p_rows JSONB) RETURNS TABLE (request_id TEXT, result TEXT) LANGUAGE plpgsql AS $$
DECLARE
    r RECORD;
    v_period TEXT;
    v_amount BIGINT;
    v_ids TEXT[] := '{}';
    v_periods TEXT[] := '{}';
    v_held BIGINT[] := '{}';
    v_results TEXT[] := '{}';
    c RECORD;
BEGIN
    FOR r IN SELECT * FROM jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, start_period TEXT)
             ORDER BY x.customer_id, x.request_id LOOP
        DELETE FROM holds WHERE id = r.request_id RETURNING period, amount_nanos INTO v_period, v_amount;
        IF FOUND THEN
            v_results := v_results || 'settled'::TEXT;
        ELSE
            v_amount := 0;
            DELETE FROM usage u WHERE u.request_id = r.request_id AND u.outcome = 'hold_expired' RETURNING u.period INTO v_period;
            IF FOUND THEN
                v_results := v_results || 'settled_without_hold'::TEXT;
            ELSIF EXISTS (SELECT 1 FROM usage u WHERE u.request_id = r.request_id) THEN
                v_results := v_results || 'already_settled'::TEXT;
            ELSE
                v_period := r.start_period;
                v_results := v_results || 'settled_without_hold'::TEXT;
            END IF;
        END IF;
        v_ids := v_ids || r.request_id;
        v_periods := v_periods || v_period;
        v_held := v_held || v_amount;
    END LOOP;

    FOR c IN SELECT x.customer_id, d.period, SUM(d.held) AS released, SUM(x.cost_nanos) AS cost
             FROM unnest(v_ids, v_periods, v_held, v_results) AS d(id, period, held, result)
             JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, cost_nanos BIGINT) ON x.request_id = d.id
             WHERE d.result <> 'already_settled'
             GROUP BY x.customer_id, d.period ORDER BY x.customer_id, d.period LOOP
        INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES (c.customer_id, c.period, 0, 0)
            ON CONFLICT (customer_id, period) DO NOTHING;
        UPDATE budget_periods SET held_nanos = held_nanos - c.released, spent_nanos = spent_nanos + c.cost
            WHERE customer_id = c.customer_id AND period = c.period;
    END LOOP;

    INSERT INTO usage (request_id, customer_id, key_id, endpoint, dialect, provider, model, http_status, outcome,
        prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos,
        price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_cached_input_per_1m_nanos,
        price_source, latency_us, ttfb_us, created_us, period)
    SELECT x.request_id, x.customer_id, x.key_id, x.endpoint, x.dialect, x.provider, x.model, x.http_status, x.outcome,
        x.prompt_tokens, x.completion_tokens, x.cached_tokens, x.token_source, x.cost_nanos, d.held,
        x.price_per_request_nanos, x.price_per_model_nanos, x.price_input_per_1m_nanos, x.price_output_per_1m_nanos,
        x.price_cached_input_per_1m_nanos, x.price_source, x.latency_us, x.ttfb_us, x.created_us, d.period
    FROM unnest(v_ids, v_periods, v_held, v_results) AS d(id, period, held, result)
    JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, key_id BIGINT, endpoint TEXT, dialect TEXT,
        provider TEXT, model TEXT, http_status BIGINT, outcome TEXT, prompt_tokens BIGINT, completion_tokens BIGINT,
        cached_tokens BIGINT, token_source TEXT, cost_nanos BIGINT, price_per_request_nanos BIGINT,
        price_per_model_nanos BIGINT, price_input_per_1m_nanos BIGINT, price_output_per_1m_nanos BIGINT,
        price_cached_input_per_1m_nanos BIGINT, price_source TEXT, latency_us BIGINT, ttfb_us BIGINT, created_us BIGINT)
        ON x.request_id = d.id
    WHERE d.result <> 'already_settled';

    RETURN QUERY SELECT d.id, d.result FROM unnest(v_ids, v_results) AS d(id, result);
END $$;
