-- Daily revenue by payment method, from the payments fact (so it reflects settled statuses
-- exactly as the fact does).
-- grain: one row per payment_date and payment_method
-- materialized: table
-- test: not_null payment_date, payment_method, count_transactions
-- test: unique payment_date, payment_method

with payments as (

    select * from marts.fact_transactions

),

final as (

    select
        payment_date,
        payment_method,
        count(*) as count_transactions,
        count(*) filter (where status = 'SUCCESS') as count_successful,
        count(*) filter (where status = 'PENDING') as count_pending,
        coalesce(sum(amount_inr) filter (where status = 'SUCCESS'), 0) as gross_value_inr,
        round(coalesce(avg(amount_inr) filter (where status = 'SUCCESS'), 0), 2) as average_ticket_inr,
        count(*) filter (where is_fraud) as count_fraud,
        round(count(*) filter (where is_fraud)::numeric / count(*), 4) as fraud_rate
    from payments
    group by payment_date, payment_method

)

select * from final
