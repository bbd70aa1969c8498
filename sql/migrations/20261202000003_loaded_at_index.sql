-- The incremental staging model reads the payments with events loaded within its window.
-- Load times only grow (every row of a load run has the run's start time), so each load
-- appends to the right edge of this index, unlike the random keys of the other two.
create index if not exists transactions_loaded_at on raw.transactions (loaded_at);
