//! Helpers for tests that need the test environment (`scripts/test.sh`).

#![allow(dead_code)]

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

/// Every (partition, offset) stored in the Parquet files under `prefix` of the lake,
/// with repeats.
pub async fn stored_offsets(
    lake: &fintech_workers::storage::StorageOptions,
    prefix: &str,
) -> Vec<(i32, i64)> {
    let (store, root) = lake.open().unwrap();
    let folder = prefix
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(root, |path, part| path.join(part));
    fintech_workers::bronze::stored_positions(store.as_ref(), &folder)
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
