-- Every payment in the fact has a positive amount in its currency and in INR.
select transaction_id, amount, amount_inr
from marts.fact_transactions
where amount <= 0 or amount_inr <= 0
