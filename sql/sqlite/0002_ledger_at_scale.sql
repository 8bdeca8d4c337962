-- The ledger at scale: per-day rollups kept equal to the ledger's sums by triggers on every
-- insert and delete. Reports read these, never the ledger.
CREATE TABLE usage_daily (
    customer_id       INTEGER NOT NULL,
    day               INTEGER NOT NULL,
    model             TEXT    NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cached_tokens     INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,
    PRIMARY KEY (customer_id, day, model)
);

INSERT INTO usage_daily
SELECT customer_id, created_us / 86400000000, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
       SUM(cached_tokens), SUM(cost_nanos)
FROM usage GROUP BY 1, 2, 3;

CREATE TRIGGER usage_rollup_insert AFTER INSERT ON usage BEGIN
    INSERT INTO usage_daily (customer_id, day, model, requests, prompt_tokens, completion_tokens, cached_tokens, cost_nanos)
    VALUES (NEW.customer_id, NEW.created_us / 86400000000, NEW.model, 1, NEW.prompt_tokens, NEW.completion_tokens,
            NEW.cached_tokens, NEW.cost_nanos)
    ON CONFLICT (customer_id, day, model) DO UPDATE SET
        requests = requests + 1, prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cached_tokens = cached_tokens + excluded.cached_tokens, cost_nanos = cost_nanos + excluded.cost_nanos;
END;

-- While a row is here, deletes from the ledger are an archive: the rollups keep their sums.
CREATE TABLE usage_archiving (active INTEGER NOT NULL);

CREATE TRIGGER usage_rollup_delete AFTER DELETE ON usage WHEN NOT EXISTS (SELECT 1 FROM usage_archiving) BEGIN
    UPDATE usage_daily SET requests = requests - 1, prompt_tokens = prompt_tokens - OLD.prompt_tokens,
        completion_tokens = completion_tokens - OLD.completion_tokens, cached_tokens = cached_tokens - OLD.cached_tokens,
        cost_nanos = cost_nanos - OLD.cost_nanos
    WHERE customer_id = OLD.customer_id AND day = OLD.created_us / 86400000000 AND model = OLD.model;
END;
