-- Scoped keys and limits (see the PostgreSQL file for the reasoning; the statements match).

-- Expiry; a rotated key's previous secret and when it stops working; last use (written in
-- batches, never per request); scopes (comma-separated; NULL: everything); limits (NULL: none).
ALTER TABLE api_keys ADD COLUMN expires_us INTEGER;
ALTER TABLE api_keys ADD COLUMN previous_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_expires_us INTEGER;
ALTER TABLE api_keys ADD COLUMN last_used_us INTEGER;
ALTER TABLE api_keys ADD COLUMN apis TEXT;
ALTER TABLE api_keys ADD COLUMN models TEXT;
ALTER TABLE api_keys ADD COLUMN rpm INTEGER CHECK (rpm IS NULL OR rpm > 0);
ALTER TABLE api_keys ADD COLUMN tpm INTEGER CHECK (tpm IS NULL OR tpm > 0);
ALTER TABLE api_keys ADD COLUMN concurrency INTEGER CHECK (concurrency IS NULL OR concurrency > 0);
ALTER TABLE api_keys ADD COLUMN monthly_budget_nanos INTEGER CHECK (monthly_budget_nanos IS NULL OR monthly_budget_nanos >= 0);
CREATE UNIQUE INDEX api_keys_previous_hash ON api_keys (previous_hash);

ALTER TABLE customers ADD COLUMN rpm INTEGER CHECK (rpm IS NULL OR rpm > 0);
ALTER TABLE customers ADD COLUMN tpm INTEGER CHECK (tpm IS NULL OR tpm > 0);
ALTER TABLE customers ADD COLUMN concurrency INTEGER CHECK (concurrency IS NULL OR concurrency > 0);

-- What a key with its own budget spent and holds per month, beside its customer's budget_periods
-- row (set-limits starts it from the ledger when a budget is set).
CREATE TABLE key_periods (
    key_id      INTEGER NOT NULL REFERENCES api_keys (id),
    period      TEXT    NOT NULL,
    spent_nanos INTEGER NOT NULL DEFAULT 0 CHECK (spent_nanos >= 0),
    held_nanos  INTEGER NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
    PRIMARY KEY (key_id, period)
);

-- Token buckets of the rate limits, per subject ('c:ID' a customer, 'k:ID' a key). A level counts
-- 60,000,000 per request (or token) taken and drains by the limit per microsecond, so a limit of
-- N per minute is exact in integers: full at N * 60,000,000, empty after a minute of quiet.
CREATE TABLE rate_state (
    subject    TEXT    PRIMARY KEY,
    requests   INTEGER NOT NULL DEFAULT 0,
    tokens     INTEGER NOT NULL DEFAULT 0,
    updated_us INTEGER NOT NULL
);

-- The tokens a hold took from the token buckets (given back at settle beyond what was used), and
-- what it took from its key's month (0 for holds from before keys had months).
ALTER TABLE holds ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE holds ADD COLUMN key_nanos INTEGER NOT NULL DEFAULT 0;
-- One index counts both: a key's holds are its customer's holds with that key.
CREATE INDEX holds_customer_key ON holds (customer_id, key_id);
