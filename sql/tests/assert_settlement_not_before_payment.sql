-- A payment's status cannot change before the payment happened.
select transaction_id, payment_time, status_updated_at
from marts.fact_transactions
where status_updated_at < payment_time
