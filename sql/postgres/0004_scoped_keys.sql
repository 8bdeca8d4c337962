-- Scoped keys and limits that hold across replicas: expiry, rotation with a grace period, API and
-- model scopes, per-key monthly budgets, and requests/tokens per minute and concurrent requests
-- per key and per customer, all checked in the same statement as the budget hold.

-- 1. Keys: expiry; a rotated key's previous secret and when it stops working; last use (written
--    in batches, never per request); scopes (comma-separated; NULL: everything); limits (NULL:
--    none). Customers get the same three rate limits.
ALTER TABLE api_keys
    ADD COLUMN expires_us BIGINT,
    ADD COLUMN previous_hash TEXT UNIQUE,
    ADD COLUMN previous_expires_us BIGINT,
    ADD COLUMN last_used_us BIGINT,
    ADD COLUMN apis TEXT,
    ADD COLUMN models TEXT,
    ADD COLUMN rpm BIGINT CHECK (rpm IS NULL OR rpm > 0),
    ADD COLUMN tpm BIGINT CHECK (tpm IS NULL OR tpm > 0),
    ADD COLUMN concurrency BIGINT CHECK (concurrency IS NULL OR concurrency > 0),
    ADD COLUMN monthly_budget_nanos BIGINT CHECK (monthly_budget_nanos IS NULL OR monthly_budget_nanos >= 0);
ALTER TABLE customers
    ADD COLUMN rpm BIGINT CHECK (rpm IS NULL OR rpm > 0),
    ADD COLUMN tpm BIGINT CHECK (tpm IS NULL OR tpm > 0),
    ADD COLUMN concurrency BIGINT CHECK (concurrency IS NULL OR concurrency > 0);

-- 2. What a key with its own budget spent and holds per month, beside its customer's
--    budget_periods row (set-limits starts it from the ledger when a budget is set). Locked
--    after the customer's period row, always.
CREATE TABLE key_periods (
    key_id      BIGINT NOT NULL REFERENCES api_keys (id),
    period      TEXT   NOT NULL,
    spent_nanos BIGINT NOT NULL DEFAULT 0 CHECK (spent_nanos >= 0),
    held_nanos  BIGINT NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
    PRIMARY KEY (key_id, period)
);

-- 3. Token buckets of the rate limits, per subject ('c:ID' a customer, 'k:ID' a key). A level
--    counts 60,000,000 per request (or token) taken and drains by the limit per microsecond, so a
--    limit of N per minute is exact in integers: full at N * 60,000,000, empty after a minute of
--    quiet. Locked after the customer's period row, always.
CREATE TABLE rate_state (
    subject    TEXT   PRIMARY KEY,
    requests   BIGINT NOT NULL DEFAULT 0,
    tokens     BIGINT NOT NULL DEFAULT 0,
    updated_us BIGINT NOT NULL
);

-- 4. The tokens a hold took from the token buckets (given back at settle beyond what was used),
--    what it took from its key's month (0 for holds from before this migration, which took
--    nothing), and the index that counts a customer's and a key's requests in flight.
ALTER TABLE holds ADD COLUMN tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE holds ADD COLUMN key_nanos BIGINT NOT NULL DEFAULT 0;
-- One index counts both: a key's holds are its customer's holds with that key.
CREATE INDEX holds_customer_key ON holds (customer_id, key_id);

-- A bucket level drained over `p_elapsed` microseconds at `p_limit` per minute: 0 without a limit
-- and after a minute or more, never above the bucket's capacity (a level left above it, by a
-- lowered limit or a settle that used more than it held, waits a minute at most). As
-- `RateBucket.drain` in Swift.
CREATE FUNCTION lmsvr_drain(p_level BIGINT, p_elapsed BIGINT, p_limit BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_limit IS NULL OR p_elapsed >= 60000000 THEN 0
                ELSE LEAST(GREATEST(0, p_level - GREATEST(p_elapsed, 0) * p_limit), p_limit * 60000000) END
$$;

-- What a settle gives back to a token bucket: the tokens held but not used (negative: used
-- beyond the bound), the unused part scaled by how much of the minute the hold is still in the
-- bucket for, clamped. As `RateBucket.giveBack` in Swift.
CREATE FUNCTION lmsvr_give_back(p_held BIGINT, p_used BIGINT, p_age BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN u <= 0 THEN u ELSE u * GREATEST(0, 60000000 - GREATEST(p_age, 0)) / 60000000 END
    FROM (SELECT GREATEST(-10000000000, LEAST(10000000000, p_held - LEAST(p_used, 10000000000))) AS u) x
$$;

-- 5. Admission: lmsvr_hold_many plus the limits, one statement for a batch of any customers'
--    requests. Per customer (in id order, as settles lock them): its rate row (if it has
--    limits), its period row, then the month and rate rows of its keys that have a budget or
--    limits (in key id order), all locked; then each request in order is checked against
--    concurrency, requests per minute, tokens per minute, the customer's budget and the key's
--    budget, and takes its share of all of them only if every one fits. A key's month is kept
--    only while it has a budget (set-limits starts it from the ledger), and a hold records the
--    tokens it took only where a token limit applies, so requests of keys and customers without
--    limits cost what they cost before limits existed. Returns per request an outcome ('ok',
--    'budget', 'key_budget', or '<customer|key>_<concurrency|rpm|tpm>'), the budget, spent and
--    held after the batch of the budget that decided (the key's for 'key_budget'), the limit
--    that refused it and the microseconds until it would fit (-1: never, the request alone is
--    over the limit). The bucket arithmetic is `RateBucket`'s (`lmsvr_drain`, inlined).
DROP FUNCTION lmsvr_hold_many(TEXT, BIGINT[], BIGINT[], BIGINT[], TEXT[], BIGINT[], BIGINT[], TEXT[], TEXT[], TEXT[], TEXT[]);
CREATE FUNCTION lmsvr_admit_many(p_period TEXT, p_customers BIGINT[], p_nows BIGINT[], p_expires BIGINT[], p_ids TEXT[],
                                 p_amounts BIGINT[], p_tokens BIGINT[], p_keys BIGINT[], p_endpoints TEXT[],
                                 p_dialects TEXT[], p_providers TEXT[], p_models TEXT[])
RETURNS TABLE (outcomes TEXT[], budgets BIGINT[], spent BIGINT[], held BIGINT[], limits BIGINT[], retry BIGINT[])
LANGUAGE plpgsql AS $$
DECLARE
    u CONSTANT BIGINT := 60000000;
    v_n INT := COALESCE(array_length(p_ids, 1), 0);
    v_out TEXT[] := array_fill('ok'::TEXT, ARRAY[v_n]);
    v_budgets BIGINT[] := array_fill(NULL::BIGINT, ARRAY[v_n]);
    v_spent BIGINT[] := array_fill(0::BIGINT, ARRAY[v_n]);
    v_held BIGINT[] := array_fill(0::BIGINT, ARRAY[v_n]);
    v_limits BIGINT[] := array_fill(NULL::BIGINT, ARRAY[v_n]);
    v_retry BIGINT[] := array_fill(0::BIGINT, ARRAY[v_n]);
    v_taken BIGINT[] := array_fill(0::BIGINT, ARRAY[v_n]);
    v_key_share BIGINT[] := array_fill(0::BIGINT, ARRAY[v_n]);
    -- the batch's keys that have a budget or a limit, by id
    t_ids BIGINT[]; t_budget BIGINT[]; t_rpm BIGINT[]; t_tpm BIGINT[]; t_conc BIGINT[];
    c RECORD;
    cu RECORD;
    i INT;
    j INT;
    t INT;
    v_now BIGINT; v_el BIGINT; v_amount BIGINT; v_tok BIGINT;
    v_outcome TEXT; v_limit BIGINT; v_wait BIGINT;
    -- the customer's state
    v_limited BOOLEAN; v_s BIGINT; v_h BIGINT; v_flight BIGINT; v_rq BIGINT; v_tk BIGINT; v_upd BIGINT;
    v_crq BIGINT; v_ctk BIGINT; v_any BOOLEAN;
    -- its keys' state, by position in v_kids
    v_kids BIGINT[];
    k_budget BIGINT[]; k_rpm BIGINT[]; k_tpm BIGINT[]; k_conc BIGINT[];
    k_s BIGINT[]; k_h BIGINT[]; k_flight BIGINT[]; k_rq BIGINT[]; k_tk BIGINT[]; k_upd BIGINT[]; k_any BOOLEAN[];
    v_krq BIGINT; v_ktk BIGINT; v_x BIGINT; v_y BIGINT; v_z BIGINT;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    SELECT COALESCE(array_agg(a.id ORDER BY a.id), '{}'), array_agg(a.monthly_budget_nanos ORDER BY a.id),
           array_agg(a.rpm ORDER BY a.id), array_agg(a.tpm ORDER BY a.id), array_agg(a.concurrency ORDER BY a.id)
    INTO t_ids, t_budget, t_rpm, t_tpm, t_conc
    FROM api_keys a WHERE a.id = ANY (p_keys)
        AND (a.monthly_budget_nanos IS NOT NULL OR a.rpm IS NOT NULL OR a.tpm IS NOT NULL OR a.concurrency IS NOT NULL);

    FOR c IN SELECT x.customer, array_agg(x.idx ORDER BY x.idx) AS idxs
             FROM unnest(p_customers) WITH ORDINALITY AS x(customer, idx) GROUP BY x.customer ORDER BY x.customer LOOP
        SELECT monthly_budget_nanos AS budget, customers.rpm, customers.tpm, customers.concurrency INTO cu
            FROM customers WHERE id = c.customer;
        -- A customer with limits: its rate row first. Unlike the period row it is the same in
        -- every month, so batches on both sides of a month boundary queue here too.
        v_rq := 0; v_tk := 0; v_upd := 0; v_flight := 0;
        v_limited := cu.rpm IS NOT NULL OR cu.tpm IS NOT NULL OR cu.concurrency IS NOT NULL;
        IF v_limited THEN
            SELECT r.requests, r.tokens, r.updated_us INTO v_rq, v_tk, v_upd FROM rate_state r
                WHERE r.subject = 'c:' || c.customer FOR UPDATE;
            IF NOT FOUND THEN
                INSERT INTO rate_state (subject, requests, tokens, updated_us) VALUES ('c:' || c.customer, 0, 0, 0)
                    ON CONFLICT (subject) DO NOTHING;
                SELECT r.requests, r.tokens, r.updated_us INTO v_rq, v_tk, v_upd FROM rate_state r
                    WHERE r.subject = 'c:' || c.customer FOR UPDATE;
            END IF;
        END IF;
        SELECT b.spent_nanos, b.held_nanos INTO v_s, v_h FROM budget_periods b
            WHERE b.customer_id = c.customer AND b.period = p_period FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO budget_periods (customer_id, period, spent_nanos, held_nanos) VALUES (c.customer, p_period, 0, 0)
                ON CONFLICT (customer_id, period) DO NOTHING;
            SELECT b.spent_nanos, b.held_nanos INTO v_s, v_h FROM budget_periods b
                WHERE b.customer_id = c.customer AND b.period = p_period FOR UPDATE;
        END IF;
        IF cu.concurrency IS NOT NULL THEN
            SELECT count(*) INTO v_flight FROM holds h WHERE h.customer_id = c.customer;
        END IF;

        v_kids := '{}';
        IF cardinality(t_ids) > 0 THEN
            v_kids := ARRAY(SELECT DISTINCT p_keys[x] FROM unnest(c.idxs) AS x WHERE p_keys[x] = ANY (t_ids) ORDER BY 1);
        END IF;
        IF cardinality(v_kids) > 0 THEN
            k_budget := '{}'; k_rpm := '{}'; k_tpm := '{}'; k_conc := '{}'; k_s := '{}'; k_h := '{}'; k_flight := '{}';
            k_rq := '{}'; k_tk := '{}'; k_upd := '{}'; k_any := '{}';
        END IF;
        FOR j IN 1 .. cardinality(v_kids) LOOP
            t := array_position(t_ids, v_kids[j]);
            k_budget[j] := t_budget[t]; k_rpm[j] := t_rpm[t]; k_tpm[j] := t_tpm[t]; k_conc[j] := t_conc[t];
            k_s[j] := 0; k_h[j] := 0; k_rq[j] := 0; k_tk[j] := 0; k_upd[j] := 0; k_flight[j] := 0; k_any[j] := false;
            IF k_budget[j] IS NOT NULL THEN
                SELECT kp.spent_nanos, kp.held_nanos INTO v_x, v_y FROM key_periods kp
                    WHERE kp.key_id = v_kids[j] AND kp.period = p_period FOR UPDATE;
                IF NOT FOUND THEN
                    INSERT INTO key_periods (key_id, period, spent_nanos, held_nanos) VALUES (v_kids[j], p_period, 0, 0)
                        ON CONFLICT (key_id, period) DO NOTHING;
                    SELECT kp.spent_nanos, kp.held_nanos INTO v_x, v_y FROM key_periods kp
                        WHERE kp.key_id = v_kids[j] AND kp.period = p_period FOR UPDATE;
                END IF;
                k_s[j] := v_x; k_h[j] := v_y;
            END IF;
            IF k_rpm[j] IS NOT NULL OR k_tpm[j] IS NOT NULL OR k_conc[j] IS NOT NULL THEN
                SELECT r.requests, r.tokens, r.updated_us INTO v_x, v_y, v_z FROM rate_state r
                    WHERE r.subject = 'k:' || v_kids[j] FOR UPDATE;
                IF NOT FOUND THEN
                    INSERT INTO rate_state (subject, requests, tokens, updated_us) VALUES ('k:' || v_kids[j], 0, 0, 0)
                        ON CONFLICT (subject) DO NOTHING;
                    SELECT r.requests, r.tokens, r.updated_us INTO v_x, v_y, v_z FROM rate_state r
                        WHERE r.subject = 'k:' || v_kids[j] FOR UPDATE;
                END IF;
                k_rq[j] := v_x; k_tk[j] := v_y; k_upd[j] := v_z;
            END IF;
            IF k_conc[j] IS NOT NULL THEN
                SELECT count(*) INTO v_x FROM holds h WHERE h.customer_id = c.customer AND h.key_id = v_kids[j];
                k_flight[j] := v_x;
            END IF;
        END LOOP;

        v_any := false;
        FOREACH i IN ARRAY c.idxs LOOP
            IF NOT v_limited AND cardinality(v_kids) = 0 THEN
                -- No limits and no key budget here: the customer's budget alone decides, as it
                -- did before limits existed (and at that cost).
                IF cu.budget IS NULL OR v_s + v_h + p_amounts[i] <= cu.budget THEN
                    v_h := v_h + p_amounts[i];
                    v_any := true;
                ELSE
                    v_out[i] := 'budget';
                END IF;
                CONTINUE;
            END IF;
            j := array_position(v_kids, p_keys[i]);
            v_now := p_nows[i]; v_amount := p_amounts[i]; v_tok := LEAST(p_tokens[i], 10000000001);
            v_outcome := 'ok'; v_limit := NULL; v_wait := 0;
            v_crq := 0; v_ctk := 0; v_krq := 0; v_ktk := 0;
            IF v_limited THEN
                v_el := v_now - v_upd;
                IF cu.rpm IS NOT NULL AND v_el < u THEN
                    v_crq := LEAST(GREATEST(0, v_rq - GREATEST(v_el, 0) * cu.rpm), cu.rpm * u);
                END IF;
                IF cu.tpm IS NOT NULL AND v_el < u THEN
                    v_ctk := LEAST(GREATEST(0, v_tk - GREATEST(v_el, 0) * cu.tpm), cu.tpm * u);
                END IF;
            END IF;
            IF j IS NOT NULL THEN
                v_el := v_now - k_upd[j];
                IF k_rpm[j] IS NOT NULL AND v_el < u THEN
                    v_krq := LEAST(GREATEST(0, k_rq[j] - GREATEST(v_el, 0) * k_rpm[j]), k_rpm[j] * u);
                END IF;
                IF k_tpm[j] IS NOT NULL AND v_el < u THEN
                    v_ktk := LEAST(GREATEST(0, k_tk[j] - GREATEST(v_el, 0) * k_tpm[j]), k_tpm[j] * u);
                END IF;
            END IF;
            IF cu.concurrency IS NOT NULL AND v_flight >= cu.concurrency THEN
                v_outcome := 'customer_concurrency'; v_limit := cu.concurrency; v_wait := 1000000;
            ELSIF j IS NOT NULL AND k_conc[j] IS NOT NULL AND k_flight[j] >= k_conc[j] THEN
                v_outcome := 'key_concurrency'; v_limit := k_conc[j]; v_wait := 1000000;
            ELSIF cu.rpm IS NOT NULL AND v_crq + u > cu.rpm * u THEN
                v_outcome := 'customer_rpm'; v_limit := cu.rpm; v_wait := (v_crq + u - cu.rpm * u + cu.rpm - 1) / cu.rpm;
            ELSIF j IS NOT NULL AND k_rpm[j] IS NOT NULL AND v_krq + u > k_rpm[j] * u THEN
                v_outcome := 'key_rpm'; v_limit := k_rpm[j]; v_wait := (v_krq + u - k_rpm[j] * u + k_rpm[j] - 1) / k_rpm[j];
            ELSIF cu.tpm IS NOT NULL AND (v_tok > cu.tpm OR v_ctk + v_tok * u > cu.tpm * u) THEN
                v_outcome := 'customer_tpm'; v_limit := cu.tpm;
                v_wait := CASE WHEN v_tok > cu.tpm THEN -1 ELSE (v_ctk + v_tok * u - cu.tpm * u + cu.tpm - 1) / cu.tpm END;
            ELSIF j IS NOT NULL AND k_tpm[j] IS NOT NULL AND (v_tok > k_tpm[j] OR v_ktk + v_tok * u > k_tpm[j] * u) THEN
                v_outcome := 'key_tpm'; v_limit := k_tpm[j];
                v_wait := CASE WHEN v_tok > k_tpm[j] THEN -1 ELSE (v_ktk + v_tok * u - k_tpm[j] * u + k_tpm[j] - 1) / k_tpm[j] END;
            ELSIF cu.budget IS NOT NULL AND v_s + v_h + v_amount > cu.budget THEN
                v_outcome := 'budget';
            ELSIF j IS NOT NULL AND k_budget[j] IS NOT NULL AND k_s[j] + k_h[j] + v_amount > k_budget[j] THEN
                v_outcome := 'key_budget';
            END IF;
            IF v_outcome = 'ok' THEN
                v_any := true;
                v_h := v_h + v_amount;
                v_flight := v_flight + 1;
                IF v_limited THEN
                    v_rq := CASE WHEN cu.rpm IS NULL THEN 0 ELSE v_crq + u END;
                    v_tk := CASE WHEN cu.tpm IS NULL THEN 0 ELSE v_ctk + v_tok * u END;
                    v_upd := GREATEST(v_upd, v_now);
                END IF;
                IF cu.tpm IS NOT NULL THEN v_taken[i] := v_tok; END IF;
                IF j IS NOT NULL THEN
                    k_any[j] := true;
                    k_flight[j] := k_flight[j] + 1;
                    IF k_budget[j] IS NOT NULL THEN
                        k_h[j] := k_h[j] + v_amount;
                        v_key_share[i] := v_amount;
                    END IF;
                    IF k_rpm[j] IS NOT NULL OR k_tpm[j] IS NOT NULL OR k_conc[j] IS NOT NULL THEN
                        k_rq[j] := CASE WHEN k_rpm[j] IS NULL THEN 0 ELSE v_krq + u END;
                        k_tk[j] := CASE WHEN k_tpm[j] IS NULL THEN 0 ELSE v_ktk + v_tok * u END;
                        k_upd[j] := GREATEST(k_upd[j], v_now);
                    END IF;
                    IF k_tpm[j] IS NOT NULL THEN v_taken[i] := v_tok; END IF;
                END IF;
            END IF;
            v_out[i] := v_outcome;
            v_limits[i] := v_limit;
            v_retry[i] := v_wait;
        END LOOP;
        -- The figures after the batch: what is really left for a retry with a smaller bound.
        FOREACH i IN ARRAY c.idxs LOOP
            IF v_out[i] = 'key_budget' THEN
                j := array_position(v_kids, p_keys[i]);
                v_budgets[i] := k_budget[j]; v_spent[i] := k_s[j]; v_held[i] := k_h[j];
            ELSE
                v_budgets[i] := cu.budget; v_spent[i] := v_s; v_held[i] := v_h;
            END IF;
        END LOOP;

        IF v_any THEN
            UPDATE budget_periods SET held_nanos = v_h WHERE customer_id = c.customer AND period = p_period;
            IF v_limited THEN
                UPDATE rate_state SET requests = v_rq, tokens = v_tk, updated_us = v_upd WHERE subject = 'c:' || c.customer;
            END IF;
        END IF;
        FOR j IN 1 .. cardinality(v_kids) LOOP
            CONTINUE WHEN NOT k_any[j];
            IF k_budget[j] IS NOT NULL THEN
                UPDATE key_periods SET held_nanos = k_h[j] WHERE key_id = v_kids[j] AND period = p_period;
            END IF;
            IF k_rpm[j] IS NOT NULL OR k_tpm[j] IS NOT NULL OR k_conc[j] IS NOT NULL THEN
                UPDATE rate_state SET requests = k_rq[j], tokens = k_tk[j], updated_us = k_upd[j] WHERE subject = 'k:' || v_kids[j];
            END IF;
        END LOOP;
    END LOOP;
    INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, tokens, key_nanos, created_us, expires_us, endpoint,
                       dialect, provider, model)
    SELECT r.id, r.customer, r.key_id, p_period, r.amount, r.taken, r.key_share, r.now, r.expires, r.endpoint, r.dialect,
           r.provider, r.model
    FROM unnest(p_ids, p_customers, p_amounts, v_taken, v_key_share, p_keys, p_nows, p_expires, p_endpoints, p_dialects,
                p_providers, p_models, v_out)
        AS r(id, customer, amount, taken, key_share, key_id, now, expires, endpoint, dialect, provider, model, outcome)
    WHERE r.outcome = 'ok';
    RETURN QUERY SELECT v_out, v_budgets, v_spent, v_held, v_limits, v_retry;
END $$;

-- 6. Settles (as 0003's) also charge the key's month (for keys with a budget: those whose
--    holds took a key share, and any settled without its hold) and give back to the token
--    buckets what a hold took beyond what it used (only holds that took tokens). Without keys
--    with budgets or token limits in the batch, both are skipped: the settle costs what it did.
CREATE OR REPLACE FUNCTION lmsvr_settle(p_rows JSONB) RETURNS TABLE (request_id TEXT, result TEXT) LANGUAGE plpgsql AS $$
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
    v_any_key BOOLEAN;
    v_any_tokens BOOLEAN;
    v_subjects TEXT[];
    v_credits BIGINT[];
    v_nows BIGINT[];
    v_rpms BIGINT[];
    v_tpms BIGINT[];
BEGIN
    WITH dropped AS (
        DELETE FROM holds h WHERE h.id IN (SELECT x.request_id FROM jsonb_to_recordset(p_rows) AS x(request_id TEXT))
        RETURNING h.id, h.period, h.amount_nanos, h.tokens, h.key_nanos, h.created_us
    )
    SELECT COALESCE(array_agg(d.id), '{}'), COALESCE(array_agg(d.period), '{}'), COALESCE(array_agg(d.amount_nanos), '{}'),
           COALESCE(array_agg(d.tokens), '{}'), COALESCE(array_agg(d.key_nanos), '{}'), COALESCE(array_agg(d.created_us), '{}'),
           COALESCE(array_agg('settled'::TEXT), '{}'), COALESCE(bool_or(d.key_nanos > 0), false),
           COALESCE(bool_or(d.tokens > 0), false)
    INTO v_ids, v_periods, v_held, v_tokens, v_key_held, v_created, v_results, v_any_key, v_any_tokens FROM dropped d;

    FOR r IN SELECT x.request_id, x.start_period, x.key_id FROM jsonb_to_recordset(p_rows) AS x(request_id TEXT,
             start_period TEXT, key_id BIGINT) WHERE NOT (x.request_id = ANY (v_ids)) LOOP
        DELETE FROM usage u WHERE u.request_id = r.request_id AND u.outcome = 'hold_expired' RETURNING u.period INTO v_period;
        IF FOUND THEN
            v_results := v_results || 'settled_without_hold'::TEXT;
            v_any_key := v_any_key OR r.key_id IS NOT NULL;
        ELSIF EXISTS (SELECT 1 FROM usage u WHERE u.request_id = r.request_id) THEN
            v_results := v_results || 'already_settled'::TEXT;
        ELSE
            v_period := r.start_period;
            v_results := v_results || 'settled_without_hold'::TEXT;
            v_any_key := v_any_key OR r.key_id IS NOT NULL;
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

    -- Keys' months: only the rows that exist (a key has one while it has a budget), locked in key
    -- order after every period row of their customers.
    IF v_any_key THEN
        PERFORM 1 FROM key_periods k
            JOIN unnest(v_ids, v_periods, v_results) AS d(id, period, result) ON k.period = d.period
            JOIN jsonb_to_recordset(p_rows) AS x(request_id TEXT, key_id BIGINT) ON x.request_id = d.id AND k.key_id = x.key_id
            WHERE d.result <> 'already_settled'
            ORDER BY k.key_id, k.period FOR UPDATE OF k;
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
