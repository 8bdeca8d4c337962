-- Nothing to change on SQLite: every index entry ends in the rowid, which is usage.id, so the
-- index (customer_id, created_us) already reads in (created_us, id) order; there are no
-- partitions; archive-usage checks the month inside its write transaction. The file keeps the
-- two dialects' migrations numbered alike.
SELECT 1;
