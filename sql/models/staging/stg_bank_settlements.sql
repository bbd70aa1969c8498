-- The bank's settlement lines, one row per settlement day and transaction: the first line the
-- bank sent for it (by file and line number) and how many it sent (more than one is a
-- duplicate at the bank).
-- grain: one row per settlement_date and transaction_id
-- materialized: view
-- test: unique settlement_date, transaction_id
-- test: not_null settlement_date, transaction_id, amount, currency, status, bank_lines

with lines as (

    select * from raw.bank_settlements

),

ranked as (

    select
        settlement_date,
        transaction_id,
        amount,
        currency,
        status,
        settled_at,
        bank_reference,
        count(*) over (partition by settlement_date, transaction_id) as bank_lines,
        row_number() over (
            partition by settlement_date, transaction_id
            order by bank_file, line_number
        ) as line_rank
    from lines

),

final as (

    select
        settlement_date,
        transaction_id,
        amount,
        currency,
        status,
        settled_at,
        bank_reference,
        bank_lines
    from ranked
    where line_rank = 1

)

select * from final
