-- Open holds, rebuilt for the request path. Every request writes its hold in and out, so each
-- b-tree of this table is written twice per request. Keyed by the hold id itself (WITHOUT ROWID:
-- one b-tree where a rowid table and its primary-key index were two) and without the expiry
-- index (the expiry sweep reads the few open holds whole), a request writes two b-trees going
-- in and two going out instead of four and four: on SQLite, four WAL pages fewer per request
-- when requests commit one by one. Holds open during the upgrade are carried over.
CREATE TABLE holds_keyed (
    id           TEXT    NOT NULL PRIMARY KEY,
    customer_id  INTEGER NOT NULL REFERENCES customers (id),
    key_id       INTEGER,
    period       TEXT    NOT NULL,
    amount_nanos INTEGER NOT NULL CHECK (amount_nanos >= 0),
    created_us   INTEGER NOT NULL,
    expires_us   INTEGER NOT NULL,
    endpoint     TEXT    NOT NULL,
    dialect      TEXT    NOT NULL,
    provider     TEXT    NOT NULL,
    model        TEXT    NOT NULL,
    tokens       INTEGER NOT NULL DEFAULT 0,
    key_nanos    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO holds_keyed (id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect,
                         provider, model, tokens, key_nanos)
SELECT id, customer_id, key_id, period, amount_nanos, created_us, expires_us, endpoint, dialect, provider, model,
       tokens, key_nanos FROM holds;
DROP TABLE holds;
ALTER TABLE holds_keyed RENAME TO holds;
-- Counts a customer's (or one of its keys') requests in flight, for concurrency limits.
CREATE INDEX holds_customer_key ON holds (customer_id, key_id);
