-- lmsvr schema, SQLite dialect. Money columns are integer nano-dollars (10^-9 USD);
-- times are integer microseconds since the Unix epoch (UTC).

CREATE TABLE customers (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    name                 TEXT    NOT NULL,
    email                TEXT    NOT NULL,
    monthly_budget_nanos INTEGER CHECK (monthly_budget_nanos IS NULL OR monthly_budget_nanos >= 0),
    created_us           INTEGER NOT NULL
);
CREATE UNIQUE INDEX customers_email_unique ON customers (lower(email));

-- Only a SHA-256 of each key is stored; revoked keys stay for the audit trail.
CREATE TABLE api_keys (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id    INTEGER NOT NULL REFERENCES customers (id),
    name           TEXT,
    key_hash       TEXT    NOT NULL UNIQUE,
    display_prefix TEXT    NOT NULL,
    created_us     INTEGER NOT NULL,
    revoked_us     INTEGER
);
CREATE INDEX api_keys_customer ON api_keys (customer_id);

-- Effective-dated: a new row per change; the row in force is the newest one not in the future.
CREATE TABLE model_prices (
    id                        INTEGER PRIMARY KEY AUTOINCREMENT,
    model                     TEXT    NOT NULL,
    per_request_nanos         INTEGER NOT NULL CHECK (per_request_nanos >= 0),
    per_model_nanos           INTEGER NOT NULL CHECK (per_model_nanos >= 0),
    input_per_1m_nanos        INTEGER NOT NULL CHECK (input_per_1m_nanos >= 0),
    output_per_1m_nanos       INTEGER NOT NULL CHECK (output_per_1m_nanos >= 0),
    cached_input_per_1m_nanos INTEGER CHECK (cached_input_per_1m_nanos IS NULL OR cached_input_per_1m_nanos >= 0),
    effective_from_us         INTEGER NOT NULL
);
CREATE INDEX model_prices_lookup ON model_prices (model, effective_from_us, id);

CREATE TABLE model_metadata (
    name           TEXT PRIMARY KEY,
    family         TEXT,
    parameter_size TEXT,
    quantization   TEXT,
    context_length INTEGER,
    description    TEXT,
    synced_us      INTEGER NOT NULL
);

-- One row per customer and UTC month: what was spent and what is held for requests in flight.
CREATE TABLE budget_periods (
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    period      TEXT    NOT NULL,
    spent_nanos INTEGER NOT NULL DEFAULT 0 CHECK (spent_nanos >= 0),
    held_nanos  INTEGER NOT NULL DEFAULT 0 CHECK (held_nanos >= 0),
    PRIMARY KEY (customer_id, period)
);

-- Open holds only: settling or releasing a hold deletes its row.
CREATE TABLE holds (
    id           TEXT    PRIMARY KEY,
    customer_id  INTEGER NOT NULL REFERENCES customers (id),
    key_id       INTEGER,
    period       TEXT    NOT NULL,
    amount_nanos INTEGER NOT NULL CHECK (amount_nanos >= 0),
    created_us   INTEGER NOT NULL,
    expires_us   INTEGER NOT NULL,
    endpoint     TEXT    NOT NULL,
    dialect      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    model        TEXT    NOT NULL
);
CREATE INDEX holds_expiry ON holds (expires_us);

-- The ledger: one narrow row per request that reached the budget step. No prompt or output text.
CREATE TABLE usage (
    id                              INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id                      TEXT    NOT NULL UNIQUE,
    customer_id                     INTEGER NOT NULL REFERENCES customers (id),
    key_id                          INTEGER,
    period                          TEXT    NOT NULL,
    endpoint                        TEXT    NOT NULL,
    dialect                         TEXT    NOT NULL,
    provider                        TEXT    NOT NULL,
    model                           TEXT    NOT NULL,
    http_status                     INTEGER NOT NULL,
    outcome                         TEXT    NOT NULL,
    prompt_tokens                   INTEGER NOT NULL,
    completion_tokens               INTEGER NOT NULL,
    cached_tokens                   INTEGER NOT NULL,
    token_source                    TEXT    NOT NULL,
    cost_nanos                      INTEGER NOT NULL,
    held_nanos                      INTEGER NOT NULL,
    price_per_request_nanos         INTEGER NOT NULL,
    price_per_model_nanos           INTEGER NOT NULL,
    price_input_per_1m_nanos        INTEGER NOT NULL,
    price_output_per_1m_nanos       INTEGER NOT NULL,
    price_cached_input_per_1m_nanos INTEGER,
    price_source                    TEXT    NOT NULL,
    latency_us                      INTEGER NOT NULL,
    ttfb_us                         INTEGER,
    created_us                      INTEGER NOT NULL
);
CREATE INDEX usage_customer_time ON usage (customer_id, created_us);
CREATE INDEX usage_customer_period ON usage (customer_id, period);
