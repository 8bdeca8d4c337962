-- A key's budget and limits are read under the customer's period row lock, so a set-limits
-- racing an admission can no longer leave a hold outside the key's month.
--
-- Before: both admission paths read api_keys before they waited for the period row (0004 in its
-- first statement; 0009's conditional UPDATE in its statement snapshot, which a wait does not
-- renew), and set-limits marked the key's open holds before it took that row. A request admitted
-- while a budget was being set could read the key as it was (no budget, no share), queue for the
-- row, and insert its hold after the marking: its amount never reached the key's month, so the
-- key could be admitted past its budget by what such requests cost.
--
-- Now lmsvr_admit_general reads each customer's keys after that customer's period row is locked
-- (each statement takes a new snapshot in READ COMMITTED), and the lone path reads the key again
-- in its INSERT: if the key was given a budget or a limit meanwhile, it gives the amount back and
-- leaves the decision to the general path. set-limits (SQLStore.setLimits) marks the key's holds
-- once more after it has taken the row, which catches every hold committed before it got it;
-- any admission after that waits for its commit and then reads the budget. Otherwise the two
-- functions are 0004's and 0009's, with 0012's setting on the general one.

CREATE OR REPLACE FUNCTION lmsvr_admit_general(p_period TEXT, p_customers BIGINT[], p_nows BIGINT[], p_expires BIGINT[],
                                               p_ids TEXT[], p_amounts BIGINT[], p_tokens BIGINT[], p_keys BIGINT[],
                                               p_endpoints TEXT[], p_dialects TEXT[], p_providers TEXT[], p_models TEXT[])
RETURNS TABLE (outcomes TEXT[], budgets BIGINT[], spent BIGINT[], held BIGINT[], limits BIGINT[], retry BIGINT[])
LANGUAGE plpgsql
SET enable_seqscan = off AS $$
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
        -- The customer's keys with a budget or a limit, read only now, under the period row's lock:
        -- a set-limits that committed while this waited for the row is seen (a new snapshot per
        -- statement), and one that commits later marks this hold when it takes the row.
        SELECT COALESCE(array_agg(a.id ORDER BY a.id), '{}'), array_agg(a.monthly_budget_nanos ORDER BY a.id),
               array_agg(a.rpm ORDER BY a.id), array_agg(a.tpm ORDER BY a.id), array_agg(a.concurrency ORDER BY a.id)
        INTO t_ids, t_budget, t_rpm, t_tpm, t_conc
        FROM api_keys a WHERE a.id = ANY (ARRAY(SELECT p_keys[x] FROM unnest(c.idxs) AS x)) AND a.customer_id = c.customer
            AND (a.monthly_budget_nanos IS NOT NULL OR a.rpm IS NOT NULL OR a.tpm IS NOT NULL OR a.concurrency IS NOT NULL);

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

CREATE OR REPLACE FUNCTION lmsvr_admit_many(p_period TEXT, p_customers BIGINT[], p_nows BIGINT[], p_expires BIGINT[], p_ids TEXT[],
                                 p_amounts BIGINT[], p_tokens BIGINT[], p_keys BIGINT[], p_endpoints TEXT[],
                                 p_dialects TEXT[], p_providers TEXT[], p_models TEXT[])
RETURNS TABLE (outcomes TEXT[], budgets BIGINT[], spent BIGINT[], held BIGINT[], limits BIGINT[], retry BIGINT[])
LANGUAGE plpgsql AS $$
DECLARE
    f_budget BIGINT;
    f_spent BIGINT;
    f_held BIGINT;
BEGIN
    -- One request of a customer without limits, on a key without a budget or limits, whose month
    -- row exists: one conditional UPDATE decides it, under that row's lock, by the rule the
    -- general path applies to such a customer (spent + held + amount <= budget, or no budget).
    -- Anything else (a refusal, limits, a key budget, the month's first hold) finds no row here
    -- and goes to lmsvr_admit_general.
    IF cardinality(p_ids) = 1 THEN
        UPDATE budget_periods b SET held_nanos = b.held_nanos + p_amounts[1]
        FROM customers c
        WHERE b.customer_id = p_customers[1] AND b.period = p_period AND c.id = b.customer_id
            AND c.rpm IS NULL AND c.tpm IS NULL AND c.concurrency IS NULL
            AND NOT EXISTS (SELECT 1 FROM api_keys a WHERE a.id = p_keys[1]
                AND (a.monthly_budget_nanos IS NOT NULL OR a.rpm IS NOT NULL OR a.tpm IS NOT NULL OR a.concurrency IS NOT NULL))
            AND (c.monthly_budget_nanos IS NULL OR b.spent_nanos + b.held_nanos + p_amounts[1] <= c.monthly_budget_nanos)
        RETURNING c.monthly_budget_nanos, b.spent_nanos, b.held_nanos INTO f_budget, f_spent, f_held;
        IF FOUND THEN
            PERFORM set_config('synchronous_commit', 'off', true);
            -- No token limit and no key budget: the hold takes no tokens and no key share. The key
            -- is read again here, under the row's lock: the UPDATE's read of it is as old as the
            -- statement, so a set-limits that committed while it waited for the row is seen only now.
            INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, tokens, key_nanos, created_us, expires_us,
                               endpoint, dialect, provider, model)
            SELECT p_ids[1], p_customers[1], p_keys[1], p_period, p_amounts[1], 0, 0, p_nows[1], p_expires[1],
                   p_endpoints[1], p_dialects[1], p_providers[1], p_models[1]
            WHERE NOT EXISTS (SELECT 1 FROM api_keys a WHERE a.id = p_keys[1]
                AND (a.monthly_budget_nanos IS NOT NULL OR a.rpm IS NOT NULL OR a.tpm IS NOT NULL OR a.concurrency IS NOT NULL));
            IF FOUND THEN
                outcomes := ARRAY['ok'];
                budgets := ARRAY[f_budget];
                spent := ARRAY[f_spent];
                held := ARRAY[f_held];
                limits := ARRAY[NULL::BIGINT];
                retry := ARRAY[0::BIGINT];
                RETURN NEXT;
                RETURN;
            END IF;
            -- The key was given a budget or a limit meanwhile: the amount goes back, and the
            -- general path decides (this transaction keeps the row locked, so nothing slips in).
            UPDATE budget_periods SET held_nanos = held_nanos - p_amounts[1]
                WHERE customer_id = p_customers[1] AND period = p_period;
        END IF;
    END IF;

    RETURN QUERY SELECT * FROM lmsvr_admit_general(p_period, p_customers, p_nows, p_expires, p_ids, p_amounts, p_tokens, p_keys,
                                                   p_endpoints, p_dialects, p_providers, p_models);
END $$;
