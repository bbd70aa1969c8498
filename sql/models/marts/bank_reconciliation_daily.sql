-- The reconciliation summed up per settlement day: how many transactions, and how much
-- money by the bank's count and by the stream's, ended in each outcome. Amounts are in the
-- transactions' own currency, so each currency has its own rows.
-- grain: one row per settlement_date, outcome and currency
-- materialized: table
-- test: unique settlement_date, outcome, currency
-- test: not_null settlement_date, outcome, currency, count_items, bank_amount, stream_amount

with reconciliation as (

    select * from marts.bank_reconciliation

),

final as (

    select
        settlement_date,
        outcome,
        currency,
        count(*) as count_items,
        coalesce(sum(bank_amount), 0) as bank_amount,
        coalesce(sum(stream_amount), 0) as stream_amount
    from reconciliation
    group by settlement_date, outcome, currency

)

select * from final
