-- The ledger loses its (customer, month) index, written by every settle and read by one rare
-- statement (a key given a budget mid-month sums its month so far), which now reads the
-- customer's rows from the month's start through the (customer, time) index instead.
DROP INDEX usage_customer_period;
