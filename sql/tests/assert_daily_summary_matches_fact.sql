-- The daily summary counts every payment of the fact exactly once.
with summary as (
    select payment_date, sum(count_transactions) as count_transactions
    from marts.daily_revenue_summary
    group by payment_date
),
fact as (
    select payment_date, count(*) as count_transactions
    from marts.fact_transactions
    group by payment_date
)
select
    coalesce(summary.payment_date, fact.payment_date) as payment_date,
    summary.count_transactions as in_summary,
    fact.count_transactions as in_fact
from summary
full outer join fact on fact.payment_date = summary.payment_date
where summary.count_transactions is distinct from fact.count_transactions
