-- Nothing in the product reads raw.transactions by a range of event times: the transforms
-- rank each payment's events (the (transaction_id, event_time) index) and analysts read the
-- gold tables. Every load paid for this index: about 15% of the server's COPY time (see
-- docs/benchmarks.md, stage 4).
drop index if exists raw.transactions_event_time;
