-- The batch functions find holds through their indexes, never by reading the whole table.
--
-- Every request inserts a hold and deletes it, so between two autovacuum runs (a minute apart by
-- default) the table keeps tens of thousands of dead rows beside a few dozen live ones.
-- lmsvr_settle_general deleted a batch's holds with a hash join over a sequential scan of the
-- table, planned while it was small and cached for the connection's life: under sustained load
-- that scan read the whole bloated heap once per batch (docs/benchmarks.md, eighth pass: over
-- 150 s at 64 connections, bench/soak.py, throughput fell from 4,034 to 2,418 requests/s and
-- PostgreSQL's CPU per request rose from ~85 to ~210 us, recovering only in part after each
-- autovacuum). Sequential scans off alone turned that into a hash join over a full scan of the
-- primary-key index; the batch's ids now go to the index as one array (id = ANY), so each hold
-- is looked up by its key. lmsvr_settle_general as 0010 defined it (renamed by 0011) otherwise.
-- lmsvr_admit_general's reads of holds (requests in flight, by customer and key) have their
-- index conditions and use them today; sequential scans go off there too as a guard, so no plan
-- made while the table is small falls back to the heap. A later CREATE OR REPLACE of
-- lmsvr_settle_general must keep its setting and its array lookup (a test counts the rows read).
CREATE OR REPLACE FUNCTION lmsvr_settle_general(p_rows JSONB) RETURNS TABLE (request_id TEXT, result TEXT) LANGUAGE plpgsql
SET enable_seqscan = off AS $$
DECLARE
    r RECORD;
    v_period TEXT;
    v_ids TEXT[] := '{}';
    v_periods TEXT[] := '{}';
    v_held BIGINT[] := '{}';
    v_tokens BIGINT[] := '{}';
    v_key_held BIGINT[] := '{}';
    v_created BIGINT[] := '{}';
    v_results TEXT[] := '{}';
    v_any_tokens BOOLEAN;
    v_subjects TEXT[];
    v_credits BIGINT[];
    v_nows BIGINT[];
    v_rpms BIGINT[];
    v_tpms BIGINT[];
BEGIN
    WITH dropped AS (
        DELETE FROM holds h WHERE h.id = ANY (ARRAY(SELECT x.request_id FROM jsonb_to_recordset(p_rows) AS x(request_id TEXT)))
        RETURNING h.id, h.period, h.amount_nanos, h.tokens, h.key_nanos, h.created_us
    )
    SELECT COALESCE(array_agg(d.id), '{}'), COALESCE(array_agg(d.period), '{}'), COALESCE(array_agg(d.amount_nanos), '{}'),
           COALESCE(array_agg(d.tokens), '{}'), COALESCE(array_agg(d.key_nanos), '{}'), COALESCE(array_agg(d.created_us), '{}'),
           COALESCE(array_agg('settled'::TEXT), '{}'), COALESCE(bool_or(d.tokens > 0), false)
    INTO v_ids, v_periods, v_held, v_tokens, v_key_held, v_created, v_results, v_any_tokens FROM dropped d;

    FOR r IN SELECT x.request_id, x.start_period, x.key_id FROM jsonb_to_recordset(p_rows) AS x(request_id TEXT,
             start_period TEXT, key_id BIGINT) WHERE NOT (x.request_id = ANY (v_ids)) LOOP
        DELETE FROM usage u WHERE u.request_id = r.request_id AND u.outcome = 'hold_expired' RETURNING u.period INTO v_period;
        IF FOUND THEN
            v_results := v_results || 'settled_without_hold'::TEXT;
        ELSIF EXISTS (SELECT 1 FROM usage u WHERE u.request_id = r.request_id) THEN
            v_results := v_results || 'already_settled'::TEXT;
        ELSE
            v_period := r.start_period;
            v_results := v_results || 'settled_without_hold'::TEXT;
        END IF;
        v_ids := v_ids || r.request_id;
        v_periods := v_periods || v_period;
        v_held := v_held || 0::BIGINT;
        v_tokens := v_tokens || 0::BIGINT;
        v_key_held := v_key_held || 0::BIGINT;
        v_created := v_created || 0::BIGINT;
    END LOOP;

    INSERT INTO budget_periods AS b (customer_id, period, spent_nanos, held_nanos)
    SELECT x.customer_id, d.period, SUM(x.cost_nanos), SUM(d.held)
    FROM unnest(v_ids, v_periods, v_held, v_results) AS d(id, period, held, result)
    JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, cost_nanos BIGINT) ON x.request_id = d.id
    WHERE d.result <> 'already_settled'
    GROUP BY x.customer_id, d.period ORDER BY x.customer_id, d.period
    ON CONFLICT (customer_id, period) DO UPDATE
        SET held_nanos = b.held_nanos - EXCLUDED.held_nanos, spent_nanos = b.spent_nanos + EXCLUDED.spent_nanos;

    -- Keys' months: every row that exists (a key has one from when it is given a budget), whether
    -- or not the hold took a share of it, locked in key order after every period row of their
    -- customers.
    PERFORM 1 FROM key_periods k
        JOIN unnest(v_ids, v_periods, v_results) AS d(id, period, result) ON k.period = d.period
        JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, key_id BIGINT) ON x.request_id = d.id AND k.key_id = x.key_id
        WHERE d.result <> 'already_settled'
        ORDER BY k.key_id, k.period FOR UPDATE OF k;
    IF FOUND THEN
        UPDATE key_periods k SET held_nanos = GREATEST(0, k.held_nanos - n.held), spent_nanos = k.spent_nanos + n.cost
        FROM (
            SELECT x.key_id, d.period, SUM(d.held) AS held, SUM(x.cost_nanos) AS cost
            FROM unnest(v_ids, v_periods, v_key_held, v_results) AS d(id, period, held, result)
            JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, key_id BIGINT, cost_nanos BIGINT) ON x.request_id = d.id
            WHERE d.result <> 'already_settled' AND x.key_id IS NOT NULL
            GROUP BY x.key_id, d.period
        ) n
        WHERE k.key_id = n.key_id AND k.period = n.period;
    END IF;

    -- Token buckets: subjects with a token limit whose holds took tokens, locked in subject order.
    IF v_any_tokens THEN
        SELECT COALESCE(array_agg(g.subject ORDER BY g.subject), '{}'), COALESCE(array_agg(g.credit ORDER BY g.subject), '{}'),
               COALESCE(array_agg(g.now ORDER BY g.subject), '{}'), COALESCE(array_agg(g.rpm ORDER BY g.subject), '{}'),
               COALESCE(array_agg(g.tpm ORDER BY g.subject), '{}')
        INTO v_subjects, v_credits, v_nows, v_rpms, v_tpms
        FROM (
            SELECT t.subject, SUM(t.credit)::BIGINT AS credit, MAX(t.now) AS now, MAX(t.rpm) AS rpm, MAX(t.tpm) AS tpm
            FROM (
                SELECT 'c:' || x.customer_id AS subject,
                       lmsvr_give_back(d.tokens, LEAST(x.prompt_tokens, 10000000000) + LEAST(x.completion_tokens, 10000000000),
                                       x.created_us - d.created) AS credit,
                       x.created_us AS now, c.rpm, c.tpm
                FROM unnest(v_ids, v_tokens, v_created, v_results) AS d(id, tokens, created, result)
                JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, prompt_tokens BIGINT,
                    completion_tokens BIGINT, created_us BIGINT) ON x.request_id = d.id
                JOIN customers c ON c.id = x.customer_id
                WHERE d.result = 'settled' AND d.tokens > 0 AND c.tpm IS NOT NULL
                UNION ALL
                SELECT 'k:' || x.key_id,
                       lmsvr_give_back(d.tokens, LEAST(x.prompt_tokens, 10000000000) + LEAST(x.completion_tokens, 10000000000),
                                       x.created_us - d.created),
                       x.created_us, a.rpm, a.tpm
                FROM unnest(v_ids, v_tokens, v_created, v_results) AS d(id, tokens, created, result)
                JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, key_id BIGINT, prompt_tokens BIGINT,
                    completion_tokens BIGINT, created_us BIGINT) ON x.request_id = d.id
                JOIN api_keys a ON a.id = x.key_id
                WHERE d.result = 'settled' AND d.tokens > 0 AND a.tpm IS NOT NULL
            ) t GROUP BY t.subject
        ) g;
        PERFORM 1 FROM rate_state s WHERE s.subject = ANY (v_subjects) ORDER BY s.subject FOR UPDATE;
        UPDATE rate_state s SET
            tokens = GREATEST(0, lmsvr_drain(s.tokens, n.now - s.updated_us, n.tpm) - n.credit * 60000000),
            requests = lmsvr_drain(s.requests, n.now - s.updated_us, n.rpm),
            updated_us = GREATEST(s.updated_us, n.now)
        FROM unnest(v_subjects, v_credits, v_nows, v_rpms, v_tpms) AS n(subject, credit, now, rpm, tpm)
        WHERE s.subject = n.subject;
    END IF;

    INSERT INTO usage (request_id, customer_id, key_id, endpoint, dialect, provider, model, http_status, outcome,
        prompt_tokens, completion_tokens, cached_tokens, token_source, cost_nanos, held_nanos, price_per_request_nanos,
        price_per_model_nanos, price_input_per_1m_nanos, price_output_per_1m_nanos, price_cached_input_per_1m_nanos,
        price_source, latency_us, ttfb_us, created_us, period, server)
    SELECT x.request_id, x.customer_id, x.key_id, x.endpoint, x.dialect, x.provider, x.model, x.http_status, x.outcome,
        x.prompt_tokens, x.completion_tokens, x.cached_tokens, x.token_source, x.cost_nanos, d.held,
        x.price_per_request_nanos, x.price_per_model_nanos, x.price_input_per_1m_nanos, x.price_output_per_1m_nanos,
        x.price_cached_input_per_1m_nanos, x.price_source, x.latency_us, x.ttfb_us, x.created_us, d.period, x.server
    FROM unnest(v_ids, v_periods, v_held, v_results) AS d(id, period, held, result)
    JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, customer_id BIGINT, key_id BIGINT, endpoint TEXT, dialect TEXT,
        provider TEXT, model TEXT, http_status BIGINT, outcome TEXT, prompt_tokens BIGINT, completion_tokens BIGINT,
        cached_tokens BIGINT, token_source TEXT, cost_nanos BIGINT, price_per_request_nanos BIGINT,
        price_per_model_nanos BIGINT, price_input_per_1m_nanos BIGINT, price_output_per_1m_nanos BIGINT,
        price_cached_input_per_1m_nanos BIGINT, price_source TEXT, latency_us BIGINT, ttfb_us BIGINT, created_us BIGINT, server TEXT)
        ON x.request_id = d.id
    WHERE d.result <> 'already_settled';

    RETURN QUERY SELECT d.id, d.result FROM unnest(v_ids, v_results) AS d(id, result);
END $$;

ALTER FUNCTION lmsvr_admit_general(TEXT, BIGINT[], BIGINT[], BIGINT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[],
                                   TEXT[], TEXT[]) SET enable_seqscan = off;
