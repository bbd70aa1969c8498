-- The payments fact: one row per payment with its settled status, merged incrementally.
-- An incremental run re-reads the payments that changed in silver within the lookback window
-- (default 3 days before the latest last_loaded_at already merged) and upserts them on
-- transaction_id, so a PENDING payment becomes SUCCESS or FAILED when its settlement arrives,
-- however old the settlement's own event time. The window follows when rows reached silver,
-- never the times events carry, so an event dated far ahead cannot freeze the fact.
-- grain: one row per transaction_id
-- materialized: incremental
-- unique_key: transaction_id
-- incremental_column: last_loaded_at
-- test: unique transaction_id
-- test: not_null transaction_id, customer_id, merchant_id, amount_inr, payment_date, status
-- test: accepted_values status PENDING, SUCCESS, FAILED
-- test: accepted_values payment_method UPI, CARD, NETBANKING, WALLET
-- test: relationships customer_id marts.dim_customers customer_id
-- test: relationships merchant_id marts.dim_merchants merchant_id

with enriched as (

    select * from intermediate.int_transactions_enriched

),

final as (

    select
        transaction_id,
        latest_event_id,
        customer_id,
        merchant_id,
        payment_date,
        payment_time,
        status_updated_at,
        status,
        status <> 'PENDING' as is_settled,
        amount,
        currency,
        amount_inr,
        amount_band,
        payment_method,
        category,
        city,
        state,
        country,
        city_tier,
        payment_hour,
        day_of_week,
        is_weekend,
        part_of_day,
        is_fraud,
        source,
        last_loaded_at
    from enriched

)

select * from final
