//! The gold layer from a hand-made silver fixture, on the embedded PostgreSQL and the real
//! server: every mart against figures computed by hand, the settlement merge, late
//! settlements and far-future events under a window that follows arrival, a fact rebuilt after
//! its columns change, idempotent reruns, a failing data test and a model that cannot be
//! built; each guarantee a test of its own.

mod common;

use std::time::Duration;

use common::{fresh_database, testenv_var};
use fintech_workers::transform::project::embedded_files;
use fintech_workers::transform::{self, NodeStatus, Project, TransformOptions};
use fintech_workers::warehouse::WarehouseOptions;
use sqlx::PgPool;

/// One silver row: (transaction, status, event time, customer, merchant, amount, currency,
/// method, city, state, fraud).
type Event = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

/// Day D is 2026-11-02.
const FIXTURE: [Event; 6] = [
    (
        "T1",
        "SUCCESS",
        "2026-11-02 10:00:00+00",
        "C1",
        "M1",
        "100.00",
        "INR",
        "UPI",
        "Mumbai",
        "Maharashtra",
        false,
    ),
    (
        "T2",
        "SUCCESS",
        "2026-11-02 20:00:00+00",
        "C2",
        "K1",
        "10.00",
        "USD",
        "CARD",
        "Orient",
        "WA",
        false,
    ),
    (
        "T3",
        "PENDING",
        "2026-11-02 23:00:00+00",
        "C1",
        "M1",
        "500.00",
        "INR",
        "UPI",
        "Mumbai",
        "Maharashtra",
        true,
    ),
    (
        "T4",
        "FAILED",
        "2026-11-02 13:00:00+00",
        "C3",
        "M2",
        "50.00",
        "INR",
        "WALLET",
        "Pune",
        "Maharashtra",
        false,
    ),
    (
        "T5",
        "SUCCESS",
        "2026-11-03 18:00:00+00",
        "C3",
        "M2",
        "10000.00",
        "INR",
        "NETBANKING",
        "Jaipur",
        "Rajasthan",
        false,
    ),
    (
        "T7",
        "PENDING",
        "2026-11-03 12:00:00+00",
        "C2",
        "K1",
        "20.00",
        "USD",
        "CARD",
        "Orient",
        "WA",
        false,
    ),
];

/// The settlement of T3, two days after its payment.
const T3_SETTLED: Event = (
    "T3",
    "SUCCESS",
    "2026-11-04 01:00:00+00",
    "C1",
    "M1",
    "500.00",
    "INR",
    "UPI",
    "Mumbai",
    "Maharashtra",
    true,
);

async fn insert(pool: &PgPool, event: &Event) {
    let (txn, status, time, customer, merchant, amount, currency, method, city, state, fraud) =
        *event;
    sqlx::query(
        "insert into raw.transactions (event_id, transaction_id, status, event_time, customer_id, \
         merchant_id, merchant_name, category, amount, currency, payment_method, city, state, country, \
         latitude, longitude, is_fraud, source, schema_version, kafka_partition, kafka_offset, \
         kafka_timestamp, ingested_at, bronze_file, load_run_id) \
         values (gen_random_uuid(), $1, $2, $3::timestamptz, $4, $5, $5 || ' Store', 'grocery', $6::numeric, $7, $8, \
         $9, $10, case when $7 = 'USD' then 'US' else 'IN' end, null, null, $11, \
         case when $7 = 'USD' then 'kaggle' else 'synthetic' end, 1, 0, 0, null, now(), 'fixture', gen_random_uuid())",
    )
    .bind(txn)
    .bind(status)
    .bind(time)
    .bind(customer)
    .bind(merchant)
    .bind(amount)
    .bind(currency)
    .bind(method)
    .bind(city)
    .bind(state)
    .bind(fraud)
    .execute(pool)
    .await
    .unwrap();
}

/// The lookback of the tests' incremental runs: the fixture's payments were loaded days
/// apart, and the tests place them before or within three days of the latest.
const LOOKBACK: Duration = Duration::from_secs(3 * 86_400);

async fn run(pool: &PgPool, project: &Project, full_refresh: bool) -> transform::TransformReport {
    let options = TransformOptions {
        select: None,
        full_refresh,
        lookback: LOOKBACK,
    };
    transform::run(pool, project, &options).await.unwrap()
}

/// The daily summary as text rows, for exact comparison.
async fn summary(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select concat_ws(' ', payment_date, payment_method, count_transactions, count_successful, \
         count_pending, gross_value_inr, average_ticket_inr, count_fraud, fraud_rate) \
         from marts.daily_revenue_summary order by payment_date, payment_method",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn fact_status(pool: &PgPool, transaction: &str) -> String {
    sqlx::query_scalar("select status from marts.fact_transactions where transaction_id = $1")
        .bind(transaction)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Dates the silver rows of `transactions` (comma-separated) as loaded `days` earlier.
async fn loaded_days_ago(pool: &PgPool, transactions: &str, days: i32) {
    sqlx::query(
        "update raw.transactions set loaded_at = loaded_at - make_interval(days => $2) \
         where transaction_id = any(string_to_array($1, ','))",
    )
    .bind(transactions)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

/// The embedded project with `from` replaced by `to` in its file `path`.
fn embedded_with_edit(path: &str, from: &str, to: &str) -> Project {
    let files = embedded_files()
        .into_iter()
        .map(|(name, text)| {
            let text = if name == path {
                text.replace(from, to)
            } else {
                text
            };
            (name, text)
        })
        .collect();
    Project::from_files(files).unwrap()
}

/// A migrated warehouse holding the fixture in silver, every row loaded now.
async fn with_fixture(options: WarehouseOptions) -> PgPool {
    let pool = options.connect_and_migrate().await.unwrap();
    for event in &FIXTURE {
        insert(&pool, event).await;
    }
    pool
}

/// A warehouse holding the fixture in silver, built once: the pool and the project.
///
/// The fixture reached silver over time, as production's history does: T1 to T5 ten days
/// ago and T7 a day ago. An incremental run's window then holds T7 and what arrives next,
/// not the whole table (which the runner would rebuild instead of merging).
async fn built(options: WarehouseOptions) -> (PgPool, Project) {
    let pool = with_fixture(options).await;
    loaded_days_ago(&pool, "T1,T2,T3,T4,T5", 10).await;
    loaded_days_ago(&pool, "T7", 1).await;
    let project = Project::embedded().unwrap();
    let first = run(&pool, &project, false).await;
    assert!(!first.failed(), "{}", first.failures());
    (pool, project)
}

on_every_warehouse!(every_mart_matches_figures_computed_by_hand);
on_every_warehouse!(an_incremental_run_merges_a_settlement_inside_the_window);
on_every_warehouse!(a_late_settlement_is_merged_however_old_its_event_time);
on_every_warehouse!(an_event_dated_far_ahead_does_not_freeze_the_fact_table);
on_every_warehouse!(a_fact_whose_columns_changed_is_rebuilt_once);
on_every_warehouse!(a_rerun_changes_nothing_and_every_step_is_recorded);
on_every_warehouse!(a_failing_data_test_reports_a_sample_of_its_rows);
on_every_warehouse!(a_model_that_cannot_be_built_names_the_statement_and_the_reason);
on_every_warehouse!(a_failing_column_test_reports_its_own_count_beside_its_passing_neighbours);
on_every_warehouse!(an_incremental_run_ranks_only_the_payments_loaded_within_its_window);
on_every_warehouse!(a_staging_table_built_before_it_merged_is_rebuilt_with_its_key);
on_every_warehouse!(a_window_holding_most_of_a_table_rebuilds_it_instead_of_merging);
on_every_warehouse!(an_incremental_run_names_each_merchant_as_a_full_refresh_does);
on_every_warehouse!(a_passing_test_of_a_merged_model_then_checks_the_rows_merged);
on_every_warehouse!(a_failing_test_keeps_checking_every_row_until_it_passes);

async fn every_mart_matches_figures_computed_by_hand(options: WarehouseOptions) {
    let (pool, _) = built(options).await;
    // Hand-computed: USD at 83 INR; T3 pending and fraudulent; T4 failed; T7 pending.
    assert_eq!(
        summary(&pool).await,
        vec![
            "2026-11-02 CARD 1 1 0 830.00 830.00 0 0.0000",
            "2026-11-02 UPI 2 1 1 100.00 100.00 1 0.5000",
            "2026-11-02 WALLET 1 0 0 0 0.00 0 0.0000",
            "2026-11-03 CARD 1 0 1 0 0.00 0 0.0000",
            "2026-11-03 NETBANKING 1 1 0 10000.00 10000.00 0 0.0000",
        ]
    );
    let customers: Vec<String> = sqlx::query_scalar(
        "select concat_ws(' ', customer_id, count_transactions, count_successful, total_spent_inr, count_fraud, home_city) \
         from marts.dim_customers order by customer_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        customers,
        vec![
            "C1 2 1 100.00 1 Mumbai",
            "C2 2 1 830.00 0 Orient",
            "C3 2 1 10000.00 0 Jaipur"
        ]
    );
    let enriched: String = sqlx::query_scalar(
        "select concat_ws(' ', city_tier, part_of_day, amount_band, is_weekend, day_of_week) \
         from intermediate.int_transactions_enriched where transaction_id = 'T5'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Jaipur is tier 2; 18:00 is evening; ₹10,000 is medium; 2026-11-03 is a Tuesday.
    assert_eq!(enriched, "2 evening medium f 2");
    let merchants: i64 = sqlx::query_scalar("select count(*) from marts.dim_merchants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(merchants, 3);
    pool.close().await;
}

/// The settlement of T3 arrives two days later: the incremental run merges it.
async fn an_incremental_run_merges_a_settlement_inside_the_window(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    insert(&pool, &T3_SETTLED).await;
    let second = run(&pool, &project, false).await;
    assert!(!second.failed(), "{}", second.failures());
    assert_eq!(fact_status(&pool, "T3").await, "SUCCESS");
    assert!(
        summary(&pool)
            .await
            .contains(&"2026-11-02 UPI 2 2 0 600.00 300.00 1 0.5000".to_owned())
    );
    pool.close().await;
}

/// A payment ten days later, then T7's settlement, whose event time (2026-11-05) lies more
/// than the lookback before the latest payment: it reached silver after the last merge, so
/// the incremental run takes it in; the window follows arrival, not event times.
async fn a_late_settlement_is_merged_however_old_its_event_time(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    insert(
        &pool,
        &(
            "T8",
            "SUCCESS",
            "2026-11-13 09:00:00+00",
            "C1",
            "M1",
            "75.00",
            "INR",
            "UPI",
            "Mumbai",
            "Maharashtra",
            false,
        ),
    )
    .await;
    assert!(!run(&pool, &project, false).await.failed());
    insert(
        &pool,
        &(
            "T7",
            "SUCCESS",
            "2026-11-05 12:00:00+00",
            "C2",
            "K1",
            "20.00",
            "USD",
            "CARD",
            "Orient",
            "WA",
            false,
        ),
    )
    .await;
    assert!(!run(&pool, &project, false).await.failed());
    assert_eq!(fact_status(&pool, "T7").await, "SUCCESS");
    pool.close().await;
}

/// One event dated in 2099 reaches silver; payments of later days still reach the fact and
/// the daily summary on incremental runs.
async fn an_event_dated_far_ahead_does_not_freeze_the_fact_table(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    let mut far_ahead = FIXTURE[0];
    far_ahead.0 = "T90";
    far_ahead.2 = "2099-01-01 00:00:00+00";
    insert(&pool, &far_ahead).await;
    assert!(!run(&pool, &project, false).await.failed());
    let mut later = FIXTURE[0];
    later.0 = "T91";
    later.2 = "2026-11-20 10:00:00+00";
    insert(&pool, &later).await;
    let report = run(&pool, &project, false).await;
    assert!(!report.failed(), "{}", report.failures());
    assert_eq!(fact_status(&pool, "T91").await, "SUCCESS");
    assert!(
        summary(&pool)
            .await
            .contains(&"2026-11-20 UPI 1 1 0 100.00 100.00 0 0.0000".to_owned())
    );
    pool.close().await;
}

/// A fact built by an older release, whose columns differ from the model's, is rebuilt in
/// full once instead of failing every incremental run.
async fn a_fact_whose_columns_changed_is_rebuilt_once(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    sqlx::query("alter table marts.fact_transactions drop column last_loaded_at")
        .execute(&pool)
        .await
        .unwrap();
    let report = run(&pool, &project, false).await;
    assert!(!report.failed(), "{}", report.failures());
    let has_column: bool = sqlx::query_scalar(
        "select exists (select 1 from information_schema.columns \
         where table_schema = 'marts' and table_name = 'fact_transactions' \
         and column_name = 'last_loaded_at')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(has_column);
    let facts: i64 = sqlx::query_scalar("select count(*) from marts.fact_transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(facts, 6);
    pool.close().await;
}

async fn a_rerun_changes_nothing_and_every_step_is_recorded(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    insert(&pool, &T3_SETTLED).await;
    let settled = run(&pool, &project, false).await;
    assert!(!settled.failed());
    let merged = |report: &transform::TransformReport| {
        report.node("marts.fact_transactions").and_then(|n| n.rows)
    };
    // Only the settled payment changed; the others in the window are left as they are.
    assert_eq!(merged(&settled), Some(1));
    let before = summary(&pool).await;
    let again = run(&pool, &project, false).await;
    assert!(!again.failed());
    assert_eq!(merged(&again), Some(0));
    assert_eq!(summary(&pool).await, before);
    let facts: i64 = sqlx::query_scalar("select count(*) from marts.fact_transactions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(facts, 6);
    let recorded: i64 = sqlx::query_scalar(
        "select count(*) from metadata.transform_runs where run_id = $1 and status = 'SUCCESS'",
    )
    .bind(again.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded as usize, again.nodes.len());
    pool.close().await;
}

/// A bad seed row (a zero exchange rate) makes the amount test fail with a sample.
async fn a_failing_data_test_reports_a_sample_of_its_rows(options: WarehouseOptions) {
    let (pool, _) = built(options).await;
    let broken = embedded_with_edit("seeds/fx_rates.csv", "USD,83.00", "USD,0");
    let report = run(&pool, &broken, true).await;
    assert!(report.failed());
    let failures = report.failures();
    assert!(
        failures.contains("test assert_fact_amounts_positive failed"),
        "{failures}"
    );
    assert!(failures.contains("\"transaction_id\":\"T2\""), "{failures}");
    pool.close().await;
}

/// Staging and the intermediate table merge only the payments with an event loaded within
/// the window (here: T7, loaded a day ago, and T3, whose settlement arrives now), not the
/// payments loaded ten days ago; a full refresh reads them all again.
async fn an_incremental_run_ranks_only_the_payments_loaded_within_its_window(
    options: WarehouseOptions,
) {
    let (pool, project) = built(options).await;

    // A change that no load made (a hand edit of silver, dated with the old load time):
    // only a run that re-reads every payment sees it.
    sqlx::query("update raw.transactions set merchant_id = 'M9' where transaction_id = 'T1'")
        .execute(&pool)
        .await
        .unwrap();
    insert(&pool, &T3_SETTLED).await;
    let incremental = run(&pool, &project, false).await;
    assert!(!incremental.failed(), "{}", incremental.failures());
    let staged = |transaction: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "select status, merchant_id from intermediate.int_transactions_enriched \
                 where transaction_id = $1",
            )
            .bind(transaction)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(staged("T3").await, ("SUCCESS".to_owned(), "M1".to_owned()));
    assert_eq!(staged("T1").await, ("SUCCESS".to_owned(), "M1".to_owned()));
    let rows = |node: &str| incremental.node(node).and_then(|n| n.rows);
    assert_eq!(rows("staging.stg_transactions"), Some(1));
    assert_eq!(rows("intermediate.int_transactions_enriched"), Some(1));

    let full = run(&pool, &project, true).await;
    assert!(!full.failed(), "{}", full.failures());
    assert_eq!(staged("T1").await, ("SUCCESS".to_owned(), "M9".to_owned()));
    pool.close().await;
}

/// Every row of the fixture loaded at once, as after a backfill: the window holds the whole
/// table, and rebuilding it is cheaper than merging it row by row.
async fn a_window_holding_most_of_a_table_rebuilds_it_instead_of_merging(
    options: WarehouseOptions,
) {
    let pool = with_fixture(options).await;
    let project = Project::embedded().unwrap();
    assert!(!run(&pool, &project, false).await.failed());
    insert(&pool, &T3_SETTLED).await;
    let second = run(&pool, &project, false).await;
    assert!(!second.failed(), "{}", second.failures());
    let rows = |node: &str| second.node(node).and_then(|n| n.rows);
    // A rebuild reports the rows the table holds; a merge would report the one it changed.
    assert_eq!(rows("staging.stg_transactions"), Some(6));
    assert_eq!(rows("marts.fact_transactions"), Some(6));
    assert_eq!(fact_status(&pool, "T3").await, "SUCCESS");
    pool.close().await;
}

/// Staging was a plain table before it merged incrementally: a warehouse upgraded from then
/// has the table without a primary key, and the first run rebuilds it in full with one.
async fn a_staging_table_built_before_it_merged_is_rebuilt_with_its_key(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    let model = project
        .models
        .iter()
        .find(|m| m.name == "staging.stg_transactions")
        .unwrap();
    sqlx::query("drop table staging.stg_transactions")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!(
        "create table staging.stg_transactions as {}",
        model.select()
    ))
    .execute(&pool)
    .await
    .unwrap();
    insert(&pool, &T3_SETTLED).await;
    let report = run(&pool, &project, false).await;
    assert!(!report.failed(), "{}", report.failures());
    let keyed: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_constraint \
         where conrelid = 'staging.stg_transactions'::regclass and contype = 'p')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(keyed);
    let indexed: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_indexes where schemaname = 'staging' \
         and tablename = 'stg_transactions' and indexdef like '%(last_loaded_at)')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(indexed, "the window's index is built with the key");
    assert_eq!(fact_status(&pool, "T3").await, "SUCCESS");
    pool.close().await;
}

/// Silver gains an event of K1 dated before the event that named K1, and one of M2 dated
/// after. The incremental run reads only those events beside the names staging holds, and
/// names every merchant as a full refresh, which reads every event, does.
async fn an_incremental_run_names_each_merchant_as_a_full_refresh_does(options: WarehouseOptions) {
    let (pool, project) = built(options).await;
    for (merchant, name, time) in [
        ("K1", "K1 Early Name", "2026-11-01 00:00:00+00"),
        ("M2", "M2 New Name", "2026-11-05 00:00:00+00"),
    ] {
        sqlx::query(
            "insert into raw.transactions (event_id, transaction_id, status, event_time, \
             customer_id, merchant_id, merchant_name, category, amount, currency, payment_method, \
             city, state, country, latitude, longitude, is_fraud, source, schema_version, \
             kafka_partition, kafka_offset, kafka_timestamp, ingested_at, bronze_file, load_run_id) \
             select gen_random_uuid(), 'R-' || merchant_id, status, $3::timestamptz, customer_id, \
             merchant_id, $2, category, amount, currency, payment_method, city, state, country, \
             latitude, longitude, is_fraud, source, schema_version, kafka_partition, kafka_offset, \
             kafka_timestamp, now(), bronze_file, gen_random_uuid() \
             from raw.transactions where merchant_id = $1 limit 1",
        )
        .bind(merchant)
        .bind(name)
        .bind(time)
        .execute(&pool)
        .await
        .unwrap();
    }
    let names = || async {
        sqlx::query_scalar::<_, String>(
            "select merchant_id || ' ' || merchant_name from staging.stg_merchants order by 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let incremental = run(&pool, &project, false).await;
    assert!(!incremental.failed(), "{}", incremental.failures());
    let expected = ["K1 K1 Store", "M1 M1 Store", "M2 M2 New Name"];
    assert_eq!(names().await, expected);
    // A merge reports the one merchant it renamed; a rebuild would report all three.
    let merged = incremental.node("staging.stg_merchants").unwrap();
    assert_eq!(merged.rows, Some(1));

    let full = run(&pool, &project, true).await;
    assert!(!full.failed(), "{}", full.failures());
    assert_eq!(names().await, expected);
    pool.close().await;
}

/// The scope `metadata.transform_runs` recorded for the test `node` in the run `run_id`.
async fn test_scope(pool: &PgPool, run_id: uuid::Uuid, node: &str) -> String {
    sqlx::query_scalar("select scope from metadata.transform_runs where run_id = $1 and node = $2")
        .bind(run_id)
        .bind(node)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Once a column test of an incremental model has passed, an incremental run checks only
/// the rows it merged: with staging edited to give T3 a status outside the accepted list,
/// T3's settlement brings T3 into the window and the test fails on it, while T1, spoiled by
/// hand ten days of loads earlier and outside the window, is not counted.
async fn a_passing_test_of_a_merged_model_then_checks_the_rows_merged(options: WarehouseOptions) {
    let (pool, _) = built(options).await;
    const TEST: &str = "accepted_values_staging_stg_transactions_status";
    sqlx::query("update staging.stg_transactions set status = 'LOST' where transaction_id = 'T1'")
        .execute(&pool)
        .await
        .unwrap();
    // The model changes, not its columns or its tests: the run merges it.
    let project = embedded_with_edit(
        "models/staging/stg_transactions.sql",
        "        event_id as latest_event_id,\n        status,",
        "        event_id as latest_event_id,\n        \
                     case when transaction_id = 'T3' then 'LOST' else status end as status,",
    );
    insert(&pool, &T3_SETTLED).await;
    let report = run(&pool, &project, false).await;
    let test = report.node(TEST).unwrap();
    assert_eq!(test.status, NodeStatus::Failed);
    assert_eq!(test.rows, Some(1), "T3 only: {:?}", test.error);
    assert!(test.error.as_deref().unwrap().contains("LOST"));
    assert_eq!(test_scope(&pool, report.run_id, TEST).await, "window");
    // The model's other tests passed last time, and hold over the window as well.
    let unique = "unique_staging_stg_transactions_transaction_id";
    assert_eq!(report.node(unique).unwrap().status, NodeStatus::Success);
    assert_eq!(test_scope(&pool, report.run_id, unique).await, "window");
    // A table rebuilt in full is checked in full.
    let customers = "unique_marts_dim_customers_customer_id";
    assert_eq!(test_scope(&pool, report.run_id, customers).await, "all");
    pool.close().await;
}

/// A failed test checks every row again in the next run, so its failing rows cannot drop
/// out of sight because the window moved on: the test below changes (FAILED no longer
/// accepted), so it checks every row and finds T4; the next incremental run, whose window
/// does not hold T4, finds it again.
async fn a_failing_test_keeps_checking_every_row_until_it_passes(options: WarehouseOptions) {
    let (pool, _) = built(options).await;
    const TEST: &str = "accepted_values_staging_stg_transactions_status";
    let project = embedded_with_edit(
        "models/staging/stg_transactions.sql",
        "accepted_values status PENDING, SUCCESS, FAILED",
        "accepted_values status PENDING, SUCCESS",
    );
    for _ in 0..2 {
        insert(&pool, &T3_SETTLED).await;
        let report = run(&pool, &project, false).await;
        let test = report.node(TEST).unwrap();
        assert_eq!((test.status, test.rows), (NodeStatus::Failed, Some(1)));
        assert_eq!(test_scope(&pool, report.run_id, TEST).await, "all");
    }
    pool.close().await;
}

/// The runner counts the failures of a model's column tests in one scan; a test with failures
/// still reports its own count and sample, and the model's other column tests pass.
async fn a_failing_column_test_reports_its_own_count_beside_its_passing_neighbours(
    options: WarehouseOptions,
) {
    let (pool, _) = built(options).await;
    // FAILED is no longer accepted: the fixture's failed payment T4 breaks the test.
    let project = embedded_with_edit(
        "models/staging/stg_transactions.sql",
        "accepted_values status PENDING, SUCCESS, FAILED",
        "accepted_values status PENDING, SUCCESS",
    );
    let report = run(&pool, &project, false).await;
    let test = |name: &str| {
        report
            .node(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    };
    let failing = test("accepted_values_staging_stg_transactions_status");
    assert_eq!(failing.status, NodeStatus::Failed);
    assert_eq!(failing.rows, Some(1), "one status value outside the list");
    let sample = failing.error.as_deref().unwrap();
    assert!(sample.contains("\"status\":\"FAILED\""), "{sample}");
    for passing in [
        "not_null_staging_stg_transactions_status",
        "not_null_staging_stg_transactions_amount",
        "accepted_values_intermediate_int_transactions_enriched_part_of_day",
    ] {
        assert_eq!(test(passing).status, NodeStatus::Success, "{passing}");
        assert_eq!(test(passing).rows, Some(0), "{passing}");
    }
    assert_eq!(
        report
            .failures()
            .lines()
            .filter(|l| l.starts_with("test "))
            .count(),
        1,
        "{}",
        report.failures()
    );
    pool.close().await;
}

/// A model that cannot be built names what was being done and keeps the database's reason,
/// in the report and in metadata.transform_runs alike.
async fn a_model_that_cannot_be_built_names_the_statement_and_the_reason(
    options: WarehouseOptions,
) {
    let (pool, _) = built(options).await;
    let broken_model = Project::from_files(vec![(
        "models/staging/stg_broken.sql".to_owned(),
        "select * from raw.no_such_table".to_owned(),
    )])
    .unwrap();
    let report = run(&pool, &broken_model, false).await;
    let failures = report.failures();
    assert!(
        failures.contains(
            "model staging.stg_broken failed: database operation failed while creating the \
             view (model staging.stg_broken): "
        ),
        "{failures}"
    );
    assert!(failures.contains("no_such_table"), "{failures}");
    let recorded: Option<String> = sqlx::query_scalar(
        "select error from metadata.transform_runs where run_id = $1 and node = 'staging.stg_broken'",
    )
    .bind(report.run_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(recorded, report.nodes[0].error);
    pool.close().await;
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_failing_data_test_makes_the_command_exit_non_zero() {
    let url = fresh_database(&testenv_var("DATABASE_URL")).await;
    // The fixture is committed; the command connects on its own.
    with_fixture(WarehouseOptions::url(&url, 1))
        .await
        .close()
        .await;
    let folder = tempfile::tempdir().unwrap();
    for (path, text) in embedded_files() {
        let text = if path == "seeds/fx_rates.csv" {
            text.replace("USD,83.00", "USD,0")
        } else {
            text
        };
        let target = folder.path().join(&path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, text).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["transform", "--log-format", "text", "--database-url", &url])
        .arg("--sql-dir")
        .arg(folder.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("test assert_fact_amounts_positive failed"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("FAILED   test"), "{stdout}");
}

#[test]
fn an_unreachable_warehouse_fails_the_transform_with_a_clear_error() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fintech"))
        .args(["transform", "--log-format", "text"])
        .args([
            "--database-url",
            "postgres://fintech:secret@127.0.0.1:1/fintech",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to PostgreSQL at"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fintech:***@"),
        "the password is redacted: {stderr}"
    );
}

#[test]
fn listing_the_models_needs_no_database() {
    let fintech = || std::process::Command::new(env!("CARGO_BIN_EXE_fintech"));
    let listed = fintech()
        .args(["transform", "--list"])
        .env_remove("FINTECH_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(stdout.contains("fact_transactions"), "{stdout}");

    // Running the models still needs one.
    let refused = fintech()
        .arg("transform")
        .env_remove("FINTECH_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
}
