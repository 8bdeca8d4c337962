-- Open holds without the expiry index: every request inserts its hold, and each index of this
-- table is one more entry to write (and, for renewals of long calls, keeps an update from being
-- a heap-only one). The expiry sweep reads the few open holds whole instead. (SQLite's 0007 also
-- keys its table by the hold id; PostgreSQL's heap and primary key stay as they are.)
DROP INDEX IF EXISTS holds_expiry;
