-- The bank's settlement files against the stream, per settlement day and transaction, for
-- every day a bank file was loaded for. A bank line is matched with the payment of the same
-- transaction_id in the fact (whatever day the stream settled it); a payment the stream
-- settled on such a day that the bank lists on no day is missing at the bank. The first rule
-- that applies gives the outcome:
--   duplicated_at_bank  the bank sent more than one line for it that day
--   missing_in_stream   the bank settled a transaction the stream never saw
--   amount_mismatch     the amounts (or currencies) differ
--   status_mismatch     the statuses differ (a payment still PENDING in the stream included)
--   missing_at_bank     the stream settled it that day; no bank file lists it
--   matched             otherwise
-- grain: one row per settlement_date and transaction_id
-- materialized: table
-- test: unique settlement_date, transaction_id
-- test: not_null settlement_date, transaction_id, outcome, currency
-- test: accepted_values outcome matched, missing_at_bank, missing_in_stream, amount_mismatch, status_mismatch, duplicated_at_bank

with bank as (

    select * from staging.stg_bank_settlements

),

payments as (

    select * from marts.fact_transactions

),

reconciled_days as (

    select distinct settlement_date from metadata.loaded_bank_files

),

bank_side as (

    select
        bank.settlement_date,
        bank.transaction_id,
        case
            when bank.bank_lines > 1 then 'duplicated_at_bank'
            when payments.transaction_id is null then 'missing_in_stream'
            when bank.amount <> payments.amount or bank.currency <> payments.currency
                then 'amount_mismatch'
            when bank.status <> payments.status then 'status_mismatch'
            else 'matched'
        end as outcome,
        bank.currency,
        bank.amount as bank_amount,
        payments.amount as stream_amount,
        bank.status as bank_status,
        payments.status as stream_status,
        bank.settled_at as bank_settled_at,
        payments.status_updated_at as stream_settled_at,
        bank.bank_reference,
        bank.bank_lines
    from bank
    left join payments on payments.transaction_id = bank.transaction_id

),

stream_side as (

    select
        (payments.status_updated_at at time zone 'UTC')::date as settlement_date,
        payments.transaction_id,
        'missing_at_bank' as outcome,
        payments.currency,
        null::numeric as bank_amount,
        payments.amount as stream_amount,
        null::text as bank_status,
        payments.status as stream_status,
        null::timestamptz as bank_settled_at,
        payments.status_updated_at as stream_settled_at,
        null::text as bank_reference,
        0::bigint as bank_lines
    from payments
    where payments.status <> 'PENDING'
        and (payments.status_updated_at at time zone 'UTC')::date
            in (select settlement_date from reconciled_days)
        and not exists (
            select 1 from bank where bank.transaction_id = payments.transaction_id
        )

),

final as (

    select
        *,
        bank_amount - stream_amount as amount_difference
    from (
        select * from bank_side
        union all
        select * from stream_side
    ) as both_sides

)

select * from final
