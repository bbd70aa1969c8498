//! Bank reconciliation against the real services: settlement files written by the generator
//! into MinIO, loaded into silver on the PostgreSQL server by the loader's bank-file runs, and
//! matched against the fact by the gold models. Each fault kind injected into a file is found
//! with its outcome, a clean day reconciles fully, reruns change nothing, a file that is not a
//! settlement file is set aside, and `fintech bank-file` builds its file from the topic.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;

use common::kafka::{SEED, fintech, produce, topic_messages};
use common::{fresh_database, test_lake, testenv_var, unique_name};
use fintech_workers::bank::file::{HEADER, file_name};
use fintech_workers::bank::load::BankFiles;
use fintech_workers::bank::statement::{BankFaults, DayStatement, FaultKind};
use fintech_workers::bronze::Lake;
use fintech_workers::event::{Currency, EventSource, PaymentEvent, PaymentMethod, PaymentStatus};
use fintech_workers::loader::{Loader, LoaderConfig, LoaderMetrics, RunReport, RunStatus};
use fintech_workers::transform::{self, Project, TransformOptions};
use fintech_workers::warehouse::WarehouseOptions;

/// The settlement day of the fixture.
fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
}

/// A payment event of the fixture: `n`th transaction of `on`, settled with `status` at
/// `hour` o'clock.
fn payment(on: NaiveDate, n: usize, status: PaymentStatus, hour: u32) -> PaymentEvent {
    PaymentEvent {
        schema_version: 1,
        event_id: uuid::Uuid::new_v4(),
        transaction_id: format!("T-{on}-{n:03}"),
        status,
        event_time: Utc.from_utc_datetime(&on.and_hms_opt(hour, 0, 0).unwrap()),
        customer_id: Some(format!("C{}", n % 7)),
        merchant_id: format!("M{}", n % 5),
        merchant_name: format!("M{} Store", n % 5),
        category: "grocery".to_owned(),
        amount: Decimal::new(10_000 + 137 * n as i64, 2),
        currency: Currency::Inr,
        payment_method: PaymentMethod::Upi,
        city: "Pune".to_owned(),
        state: "Maharashtra".to_owned(),
        country: "IN".to_owned(),
        latitude: None,
        longitude: None,
        is_fraud: false,
        source: EventSource::Synthetic,
    }
}

/// 30 payments settled on `on` (one in ten FAILED), and one still PENDING.
fn day_of_payments(on: NaiveDate) -> Vec<PaymentEvent> {
    let mut events: Vec<PaymentEvent> = (0..30)
        .map(|n| {
            let status = if n % 10 == 3 {
                PaymentStatus::Failed
            } else {
                PaymentStatus::Success
            };
            payment(on, n, status, (n % 24) as u32)
        })
        .collect();
    events.push(payment(on, 99, PaymentStatus::Pending, 12));
    events
}

/// The bank's view of `events` on the fixture's day.
fn statement_of(events: &[PaymentEvent]) -> DayStatement {
    let mut statement = DayStatement::new(day());
    events.iter().for_each(|e| statement.record(e));
    statement
}

/// Puts `events` into silver as the loader would have.
async fn insert_silver(pool: &PgPool, events: &[PaymentEvent]) {
    for event in events {
        sqlx::query(
            "insert into raw.transactions (event_id, transaction_id, status, event_time, customer_id, \
             merchant_id, merchant_name, category, amount, currency, payment_method, city, state, \
             country, latitude, longitude, is_fraud, source, schema_version, kafka_partition, \
             kafka_offset, kafka_timestamp, ingested_at, bronze_file, load_run_id) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, null, null, $15, \
             $16, 1, 0, 0, null, now(), 'fixture', gen_random_uuid())",
        )
        .bind(event.event_id)
        .bind(&event.transaction_id)
        .bind(event.status.as_str())
        .bind(event.event_time)
        .bind(&event.customer_id)
        .bind(&event.merchant_id)
        .bind(&event.merchant_name)
        .bind(&event.category)
        .bind(event.amount)
        .bind(event.currency.as_str())
        .bind(event.payment_method.as_str())
        .bind(&event.city)
        .bind(&event.state)
        .bind(&event.country)
        .bind(event.is_fraud)
        .bind(event.source.as_str())
        .execute(pool)
        .await
        .unwrap();
    }
}

/// A warehouse on the server, a loader, and a fresh folder of bank files in MinIO.
struct Setup {
    pool: PgPool,
    loader: Loader,
    files: BankFiles,
}

async fn setup() -> Setup {
    let url = fresh_database(&testenv_var("DATABASE_URL")).await;
    let pool = WarehouseOptions::url(&url, 4)
        .connect_and_migrate()
        .await
        .unwrap();
    let lake = test_lake("reconciliation-lake");
    let loader = Loader::new(
        pool.clone(),
        Lake::open(&lake).unwrap(),
        LoaderConfig::default(),
        LoaderMetrics::default(),
    );
    let bucket = testenv_var("FINTECH_TEST_BUCKET");
    let url = format!("s3://{bucket}/{}/batch_files", unique_name("bank"));
    // The endpoint and region come from the test environment's AWS_* variables.
    let files = BankFiles::open(&url, &test_lake("unused")).unwrap();
    Setup {
        pool,
        loader,
        files,
    }
}

async fn transform(pool: &PgPool) {
    let options = TransformOptions {
        select: None,
        full_refresh: false,
        lookback: Duration::from_secs(3 * 86_400),
    };
    let report = transform::run(pool, &Project::embedded().unwrap(), &options)
        .await
        .unwrap();
    assert!(!report.failed(), "{}", report.failures());
}

async fn load(setup: &Setup) -> RunReport {
    let report = setup.loader.load_bank_files(&setup.files).await.unwrap();
    assert_eq!(report.status, RunStatus::Success, "{report:?}");
    report
}

/// `marts.bank_reconciliation` of `on`, as transaction → outcome.
async fn outcomes(pool: &PgPool, on: NaiveDate) -> BTreeMap<String, String> {
    sqlx::query_as(
        "select transaction_id, outcome from marts.bank_reconciliation where settlement_date = $1",
    )
    .bind(on)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Everything the reconciliation and the bank tables hold, as text, to compare reruns.
async fn snapshot(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select 'r ' || r::text from (select * from marts.bank_reconciliation order by 1, 2) r \
         union all select 'd ' || d::text from (select * from marts.bank_reconciliation_daily order by 1, 2, 3) d \
         union all select 'b ' || count(*) from raw.bank_settlements \
         union all select 'x ' || count(*) from raw.rejected_bank_lines \
         union all select 'f ' || count(*) from metadata.loaded_bank_files",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn each_injected_fault_is_found_with_its_outcome() {
    let setup = setup().await;
    let events = day_of_payments(day());
    insert_silver(&setup.pool, &events).await;
    transform(&setup.pool).await;

    let statement = statement_of(&events);
    let (text, injected) = statement.render(&BankFaults::ONE_OF_EACH, 5).unwrap();
    setup
        .files
        .put(&file_name(day()), text.clone())
        .await
        .unwrap();
    let report = load(&setup).await;
    assert_eq!((report.files_loaded, report.stats.rejected_total()), (1, 1));
    transform(&setup.pool).await;

    let outcomes = outcomes(&setup.pool, day()).await;
    let mut faulty = Vec::new();
    for fault in &injected {
        faulty.push(fault.transaction_id.clone());
        if let Some(expected) = fault.kind.expected_outcome() {
            assert_eq!(
                outcomes.get(&fault.transaction_id).map(String::as_str),
                Some(expected),
                "{fault:?}"
            );
        }
    }
    // Every other settled payment matches, the cut line's transaction included (its good
    // line is in the file too); the pending one is not the bank's to report.
    for event in events.iter().filter(|e| e.status != PaymentStatus::Pending) {
        let id = &event.transaction_id;
        if !faulty.contains(id)
            || injected
                .iter()
                .any(|f| &f.transaction_id == id && f.kind == FaultKind::Malformed)
        {
            assert_eq!(outcomes[id], "matched", "{id}");
        }
    }
    assert_eq!(
        outcomes.len(),
        31,
        "30 settled and one only at the bank: {outcomes:?}"
    );

    // The cut line, quarantined with its number and reason.
    let (number, line, reason): (i32, String, String) =
        sqlx::query_as("select line_number, line, reason from raw.rejected_bank_lines")
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    assert_eq!(text.lines().nth(number as usize - 1), Some(line.as_str()));
    assert_eq!(reason, "wrong_field_count");

    // The daily summary adds up to the reconciliation, with the bank's and the stream's money.
    let summary: Vec<(String, i64, Decimal, Decimal)> = sqlx::query_as(
        "select outcome, count_items, bank_amount, stream_amount \
         from marts.bank_reconciliation_daily where settlement_date = $1 order by outcome",
    )
    .bind(day())
    .fetch_all(&setup.pool)
    .await
    .unwrap();
    let counted: i64 = summary.iter().map(|s| s.1).sum();
    assert_eq!(counted, 31);
    let missing_in_stream = summary.iter().find(|s| s.0 == "missing_in_stream").unwrap();
    assert!(missing_in_stream.2 > Decimal::ZERO && missing_in_stream.3 == Decimal::ZERO);
    let missing_at_bank = summary.iter().find(|s| s.0 == "missing_at_bank").unwrap();
    assert!(missing_at_bank.2 == Decimal::ZERO && missing_at_bank.3 > Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_clean_day_reconciles_fully() {
    let setup = setup().await;
    let events = day_of_payments(day());
    insert_silver(&setup.pool, &events).await;
    let statement = statement_of(&events);
    let (text, _) = statement.render(&BankFaults::default(), 1).unwrap();
    setup.files.put(&file_name(day()), text).await.unwrap();
    load(&setup).await;
    transform(&setup.pool).await;

    let outcomes = outcomes(&setup.pool, day()).await;
    assert_eq!(outcomes.len(), 30);
    assert!(outcomes.values().all(|o| o == "matched"), "{outcomes:?}");
    let unreconciled: i64 = sqlx::query_scalar(
        "select count(*) from marts.bank_reconciliation_daily where outcome <> 'matched'",
    )
    .fetch_one(&setup.pool)
    .await
    .unwrap();
    assert_eq!(unreconciled, 0);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn loading_and_transforming_again_changes_nothing() {
    let setup = setup().await;
    let events = day_of_payments(day());
    insert_silver(&setup.pool, &events).await;
    let statement = statement_of(&events);
    let faults = BankFaults {
        missing: 1,
        duplicate: 1,
        malformed: 1,
        ..BankFaults::default()
    };
    let (text, _) = statement.render(&faults, 9).unwrap();
    setup.files.put(&file_name(day()), text).await.unwrap();
    load(&setup).await;
    transform(&setup.pool).await;
    let first = snapshot(&setup.pool).await;

    let again = load(&setup).await;
    assert_eq!(
        (again.files_pending, again.files_loaded, again.rows_loaded),
        (0, 0, 0)
    );
    transform(&setup.pool).await;
    assert_eq!(snapshot(&setup.pool).await, first);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn a_file_that_is_not_a_settlement_file_is_set_aside_and_the_others_load() {
    let setup = setup().await;
    let events = day_of_payments(day());
    let statement = statement_of(&events);
    let (text, _) = statement.render(&BankFaults::default(), 1).unwrap();
    setup.files.put(&file_name(day()), text).await.unwrap();
    let other_day = day().succ_opt().unwrap();
    let wrong = setup
        .files
        .put(&file_name(other_day), "id;amount\nT1;1.00\n".to_owned())
        .await
        .unwrap();
    // Objects not named like a settlement file are not the loader's.
    setup
        .files
        .put("README.txt", "not a settlement file".to_owned())
        .await
        .unwrap();

    let report = load(&setup).await;
    assert_eq!(
        (
            report.files_pending,
            report.files_loaded,
            report.files_quarantined
        ),
        (2, 1, 1)
    );
    assert_eq!(report.health, "quarantined_files");
    let (reason, error): (String, String) =
        sqlx::query_as("select reason, error from metadata.quarantined_files where path = $1")
            .bind(wrong.as_ref())
            .fetch_one(&setup.pool)
            .await
            .unwrap();
    assert_eq!(reason, "wrong_schema");
    assert!(error.contains(HEADER), "{error}");
    // Set aside, it is not read again on every run.
    let again = load(&setup).await;
    assert_eq!(again.files_pending, 0);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn the_bank_file_command_lists_the_days_settlements_from_the_topic() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let topic = unique_name("bank-topic");
    // 1,500 messages at 1,000 payments a day from 2026-11-01: the first day and half the next.
    produce(&bootstrap, &topic, 1_500);
    let first_day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    // What the file must list: each transaction's latest settled event dated that day.
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (_, payload) in topic_messages(&bootstrap, &topic).await {
        let Ok(event) = PaymentEvent::from_json(&payload) else {
            continue;
        };
        if event.status != PaymentStatus::Pending && event.event_time.date_naive() == first_day {
            expected.insert(
                event.transaction_id.clone(),
                (
                    event.status.as_str().to_owned(),
                    format!("{:.2}", event.amount),
                ),
            );
        }
    }
    assert!(expected.len() > 500, "{} settled", expected.len());

    let bucket = testenv_var("FINTECH_TEST_BUCKET");
    let url = format!("s3://{bucket}/{}/batch_files", unique_name("bank-command"));
    let output = fintech()
        .args([
            "bank-file",
            "--bootstrap-servers",
            &bootstrap,
            "--topic",
            &topic,
        ])
        .args(["--day", "2026-11-01", "--bank-files-url", &url])
        .args(["--seed", &SEED.to_string(), "--fault-missing", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let missing: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("fault missing "))
        .collect();
    assert_eq!(missing.len(), 2, "{stdout}");

    let files = BankFiles::open(&url, &test_lake("unused")).unwrap();
    let text = files.get(&file_name(first_day)).await.unwrap();
    let parsed = fintech_workers::bank::file::parse_file(&text).unwrap();
    assert!(parsed.rejected.is_empty());
    let listed: BTreeMap<String, (String, String)> = parsed
        .lines
        .into_iter()
        .map(|(_, l)| {
            (
                l.transaction_id,
                (l.status.as_str().to_owned(), format!("{:.2}", l.amount)),
            )
        })
        .collect();
    for id in &missing {
        assert!(
            expected.remove(*id).is_some(),
            "{id} was not settled that day"
        );
    }
    assert_eq!(listed, expected);
}
