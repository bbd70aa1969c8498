-- Customers with their activity.
-- grain: one row per customer_id
-- materialized: table
-- test: unique customer_id
-- test: not_null customer_id, count_transactions, first_payment_time

with enriched as (

    select * from intermediate.int_transactions_enriched

),

final as (

    select
        customer_id,
        min(payment_time) as first_payment_time,
        max(payment_time) as last_payment_time,
        count(*) as count_transactions,
        count(*) filter (where status = 'SUCCESS') as count_successful,
        coalesce(sum(amount_inr) filter (where status = 'SUCCESS'), 0) as total_spent_inr,
        count(*) filter (where is_fraud) as count_fraud,
        mode() within group (order by city) as home_city,
        mode() within group (order by payment_method) as preferred_payment_method
    from enriched
    group by customer_id

)

select * from final
