-- Merchants with their activity.
-- grain: one row per merchant_id
-- materialized: table
-- test: unique merchant_id
-- test: not_null merchant_id, merchant_name, count_transactions

with merchants as (

    select * from staging.stg_merchants

),

activity as (

    select
        merchant_id,
        count(*) as count_transactions,
        coalesce(sum(amount_inr) filter (where status = 'SUCCESS'), 0) as gross_value_inr,
        count(*) filter (where is_fraud) as count_fraud
    from intermediate.int_transactions_enriched
    group by merchant_id

),

final as (

    select
        merchants.merchant_id,
        merchants.merchant_name,
        merchants.category,
        merchants.country,
        coalesce(activity.count_transactions, 0) as count_transactions,
        coalesce(activity.gross_value_inr, 0) as gross_value_inr,
        coalesce(activity.count_fraud, 0) as count_fraud
    from merchants
    left join activity
        on activity.merchant_id = merchants.merchant_id

)

select * from final
