-- A lone hold in fewer statements. At concurrency 1 (and for a lone stream, before its first
-- token) every hold is a batch of one, and lmsvr_admit_many spent about half of its ~500 us per
-- call on its machinery around the two writes a hold needs (docs/benchmarks.md, seventh pass:
-- 243 us for the writes alone, measured with pgbench). Such a batch, for a customer and key
-- without limits or a key budget, is now decided by one conditional UPDATE; everything else is
-- passed to 0004's function as it was, renamed lmsvr_admit_general.
ALTER FUNCTION lmsvr_admit_many(TEXT, BIGINT[], BIGINT[], BIGINT[], TEXT[], BIGINT[], BIGINT[], BIGINT[], TEXT[], TEXT[],
                                TEXT[], TEXT[]) RENAME TO lmsvr_admit_general;

CREATE FUNCTION lmsvr_admit_many(p_period TEXT, p_customers BIGINT[], p_nows BIGINT[], p_expires BIGINT[], p_ids TEXT[],
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
    -- and goes to 0004's function, unchanged, now named lmsvr_admit_general.
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
            -- No token limit and no key budget: the hold takes no tokens and no key share.
            INSERT INTO holds (id, customer_id, key_id, period, amount_nanos, tokens, key_nanos, created_us, expires_us,
                               endpoint, dialect, provider, model)
            VALUES (p_ids[1], p_customers[1], p_keys[1], p_period, p_amounts[1], 0, 0, p_nows[1], p_expires[1],
                    p_endpoints[1], p_dialects[1], p_providers[1], p_models[1]);
            outcomes := ARRAY['ok'];
            budgets := ARRAY[f_budget];
            spent := ARRAY[f_spent];
            held := ARRAY[f_held];
            limits := ARRAY[NULL::BIGINT];
            retry := ARRAY[0::BIGINT];
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    RETURN QUERY SELECT * FROM lmsvr_admit_general(p_period, p_customers, p_nows, p_expires, p_ids, p_amounts, p_tokens, p_keys,
                                                   p_endpoints, p_dialects, p_providers, p_models);
END $$;
