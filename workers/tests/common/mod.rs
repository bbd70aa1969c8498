//! Helpers for tests that need the test environment (`scripts/test.sh`).

#![allow(dead_code)]

pub mod fill;
pub mod kafka;
pub mod log_source;
pub mod outage;
pub mod stores;

/// Reads a variable of the test environment's env file, failing loudly when it is missing so
/// that a test can never pass without the service it is meant to exercise.
pub fn testenv_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the real services; run scripts/test.sh, or \
             scripts/testenv.sh up and then `set -a; . \"$(scripts/testenv.sh env)\"; set +a`"
        )
    })
}

/// A name unique to this test run, for topics, buckets prefixes and databases.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The bronze lake of a test: a fresh prefix in the test environment's bucket.
pub fn test_lake(name: &str) -> fintech_workers::storage::StorageOptions {
    let bucket = testenv_var("FINTECH_TEST_BUCKET");
    testenv_var("AWS_ENDPOINT_URL");
    fintech_workers::storage::StorageOptions {
        lake_url: format!("s3://{bucket}/{}", unique_name(name)),
        s3_endpoint: None,
        s3_region: None,
    }
}

/// The header line of Kaggle's `fraudTrain.csv`.
pub const KAGGLE_HEADER: &str = ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud";

/// A Kaggle `fraudTrain.csv` export of `rows` rows: row `i` has merchant `Merchant {i}, Ltd`
/// and `trans_num` `{i:032x}`, so file order can be read back from either.
pub fn kaggle_export(rows: usize) -> String {
    let mut text = format!("{KAGGLE_HEADER}\n");
    for i in 0..rows {
        text.push_str(&format!(
            "{i},2019-01-01 00:00:18,2703186189652095,\"fraud_Merchant {i}, Ltd\",misc_net,4.97,\
             Jennifer,Banks,F,561 Perry Cove,Moravian Falls,NC,28654,36.0788,-81.1781,3495,\
             Psychologist,1988-03-09,{i:032x},1325376018,36.011293,-82.048315,0\n"
        ));
    }
    text
}

/// Every (partition, offset) stored in the Parquet files under `prefix` of the lake,
/// with repeats.
pub async fn stored_offsets(
    lake: &fintech_workers::storage::StorageOptions,
    prefix: &str,
) -> Vec<(i32, i64)> {
    fintech_workers::bronze::Lake::open(lake)
        .unwrap()
        .stored_positions(prefix)
        .await
        .unwrap()
}

/// Asserts no (partition, offset) repeats and there are `expected` of them.
pub fn assert_each_once(mut pairs: Vec<(i32, i64)>, expected: usize) {
    let total = pairs.len();
    pairs.sort_unstable();
    pairs.dedup();
    assert_eq!(
        pairs.len(),
        total,
        "{} (partition, offset) pairs are stored twice",
        total - pairs.len()
    );
    assert_eq!(
        total, expected,
        "stored {total} messages, expected {expected}"
    );
}

/// Sum over partitions of the offsets `group` has committed on `topic`.
pub fn committed_total(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition(topic, partition);
    }
    let committed = consumer
        .committed_offsets(list, std::time::Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        })
        .sum()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on loopback; returns the status code and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    fintech_status_server::http_get(port, path).ok()
}

/// The value of the first sample of metric `name` in a Prometheus text body, 0 if absent.
pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Creates an empty database on the server of `url` and returns its URL.
pub async fn fresh_database(url: &str) -> String {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    let name = unique_name("load").replace('-', "_");
    sqlx::query(&format!("create database {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_path(&name);
    parsed.to_string()
}

/// Runs `scenario` against a fresh embedded PostgreSQL and stops it afterwards.
pub async fn on_embedded_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(fintech_workers::warehouse::WarehouseOptions) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let folder = tempfile::tempdir().unwrap();
    let warehouse = fintech_workers::warehouse::EmbeddedWarehouse::start(folder.path()).unwrap();
    scenario(warehouse.options()).await;
    warehouse.shutdown().await.unwrap();
}

/// Runs the guarantee `$guarantee` (an `async fn(WarehouseOptions)` of the calling file) on
/// the embedded PostgreSQL and, with the test environment, on the PostgreSQL server: one
/// module named for the guarantee, one test per warehouse.
#[macro_export]
macro_rules! on_every_warehouse {
    ($guarantee:ident) => {
        mod $guarantee {
            #[tokio::test]
            async fn on_the_embedded_postgres() {
                $crate::common::on_embedded_postgres(super::$guarantee).await;
            }

            #[tokio::test]
            #[ignore = "needs the test environment: scripts/test.sh"]
            async fn on_the_postgres_server() {
                let url = $crate::common::testenv_var("DATABASE_URL");
                let url = $crate::common::fresh_database(&url).await;
                super::$guarantee(fintech_workers::warehouse::WarehouseOptions::url(&url, 4)).await;
            }
        }
    };
}
