-- Latest event of each payment, cleaned and typed. An incremental run ranks again only the
-- payments with an event loaded within the window (all of their events, so the latest and
-- the first are right) and merges them on transaction_id.
-- grain: one row per transaction_id
-- materialized: incremental
-- unique_key: transaction_id
-- incremental_column: last_loaded_at
-- test: unique transaction_id
-- test: not_null transaction_id, status, payment_time, status_updated_at, customer_id, amount, last_loaded_at
-- test: accepted_values status PENDING, SUCCESS, FAILED

with transactions as (

    select * from raw.transactions
    -- incremental: where transaction_id in (select transaction_id from raw.transactions where loaded_at >= {since})

),

ranked as (

    select
        *,
        row_number() over (
            partition by transaction_id
            -- the latest event wins; at the same instant a settlement beats a PENDING event
            order by event_time desc, (status <> 'PENDING') desc, event_id
        ) as recency,
        min(event_time) over (partition by transaction_id) as first_event_time,
        -- when the payment last changed in silver: the incremental merge's watermark, taken
        -- from the warehouse's clock rather than from times the events carry
        max(loaded_at) over (partition by transaction_id) as last_loaded_at
    from transactions

),

final as (

    select
        transaction_id,
        event_id as latest_event_id,
        status,
        first_event_time as payment_time,
        event_time as status_updated_at,
        customer_id,
        merchant_id,
        merchant_name,
        lower(category) as category,
        amount,
        currency,
        payment_method,
        city,
        state,
        country,
        latitude,
        longitude,
        is_fraud,
        source,
        last_loaded_at
    from ranked
    where recency = 1

)

select * from final
