-- Every line loaded from a bank file is in the reconciliation: per settlement day, the lines
-- in silver equal the lines the reconciliation counts.
with loaded as (

    select settlement_date, count(*) as lines
    from raw.bank_settlements
    group by settlement_date

),

reconciled as (

    select settlement_date, sum(bank_lines) as lines
    from marts.bank_reconciliation
    group by settlement_date

)

select loaded.settlement_date, loaded.lines as loaded_lines, reconciled.lines as reconciled_lines
from loaded
left join reconciled on reconciled.settlement_date = loaded.settlement_date
where reconciled.lines is distinct from loaded.lines
