-- Merchants as their latest event names them.
-- grain: one row per merchant_id
-- materialized: table
-- test: unique merchant_id
-- test: not_null merchant_id, merchant_name, category

with transactions as (

    select * from raw.transactions

),

final as (

    select distinct on (merchant_id)
        merchant_id,
        merchant_name,
        lower(category) as category,
        country
    from transactions
    order by merchant_id, event_time desc, event_id

)

select * from final
