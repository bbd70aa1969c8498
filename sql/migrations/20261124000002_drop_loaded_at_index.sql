-- Nothing reads raw.transactions by load time (load runs are audited in metadata.load_audit),
-- and every index on the table is maintained by every load.
drop index if exists raw.transactions_loaded_at;
