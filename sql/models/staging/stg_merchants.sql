-- Merchants as their latest event names them. An incremental run reads only the events
-- loaded within the window, beside the name each merchant has already: whichever is the
-- latest names the merchant, as it would among all of its events.
-- grain: one row per merchant_id
-- materialized: incremental
-- unique_key: merchant_id
-- incremental_column: loaded_at
-- test: unique merchant_id
-- test: not_null merchant_id, merchant_name, category

with transactions as (

    select merchant_id, merchant_name, category, country, event_time, event_id, loaded_at
    from raw.transactions
    -- incremental: where loaded_at >= {since}
    -- incremental: union all
    -- incremental: select merchant_id, merchant_name, category, country, named_at, naming_event_id, loaded_at
    -- incremental: from staging.stg_merchants

),

final as (

    select distinct on (merchant_id)
        merchant_id,
        merchant_name,
        lower(category) as category,
        country,
        -- the event that names the merchant, which a later event must beat
        event_time as named_at,
        event_id as naming_event_id,
        loaded_at
    from transactions
    order by merchant_id, event_time desc, event_id

)

select * from final
