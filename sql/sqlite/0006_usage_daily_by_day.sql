-- The dashboard's overview sums every customer's rollups of a month: by day, not by customer,
-- so it needs its own index (the primary key leads with the customer). Only inserts of new
-- (customer, day, model) rows maintain it: the settles' updates change no indexed column.
CREATE INDEX usage_daily_day ON usage_daily (day, model);
