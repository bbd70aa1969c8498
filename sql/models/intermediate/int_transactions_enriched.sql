-- Payments with time features, city tier, amount in INR and amount band. An incremental run
-- reads only the payments staging changed within the window.
-- grain: one row per transaction_id
-- materialized: incremental
-- unique_key: transaction_id
-- incremental_column: last_loaded_at
-- test: unique transaction_id
-- test: not_null amount_inr, payment_date, part_of_day, amount_band
-- test: accepted_values part_of_day morning, afternoon, evening, night
-- test: accepted_values amount_band micro, small, medium, large

with transactions as (

    select * from staging.stg_transactions
    -- incremental: where last_loaded_at >= {since}

),

cities as (

    select * from seeds.indian_cities

),

fx_rates as (

    select * from seeds.fx_rates

),

with_features as (

    select
        transactions.*,
        (transactions.payment_time at time zone 'UTC')::date as payment_date,
        extract(hour from transactions.payment_time at time zone 'UTC')::int as payment_hour,
        extract(isodow from transactions.payment_time at time zone 'UTC')::int as day_of_week,
        cities.tier::int as city_tier,
        round(transactions.amount * fx_rates.rate_to_inr, 2) as amount_inr
    from transactions
    left join cities
        on cities.city = transactions.city
        and cities.state = transactions.state
    inner join fx_rates
        on fx_rates.currency = transactions.currency

),

final as (

    select
        *,
        day_of_week in (6, 7) as is_weekend,
        case
            when payment_hour between 5 and 11 then 'morning'
            when payment_hour between 12 and 16 then 'afternoon'
            when payment_hour between 17 and 21 then 'evening'
            else 'night'
        end as part_of_day,
        case
            when amount_inr < 500 then 'micro'
            when amount_inr < 5000 then 'small'
            when amount_inr < 50000 then 'medium'
            else 'large'
        end as amount_band
    from with_features

)

select * from final
