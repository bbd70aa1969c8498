//! Smoke tests of the test environment: one round trip to each real service, proving the
//! environment (and this crate's clients) work before any stage is tested against them.

mod common;

use std::time::Duration;

use common::{testenv_var, unique_name};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn kafka_round_trip() {
    let bootstrap = testenv_var("KAFKA_BOOTSTRAP_SERVERS");
    let kafka = fintech_workers::kafka::KafkaOptions {
        bootstrap_servers: bootstrap.clone(),
        topic: unique_name("smoke"),
        properties: vec![],
        timeout_secs: 30,
    };
    let topic = fintech_workers::kafka::TopicOptions {
        partitions: 1,
        replication_factor: 1,
    };
    fintech_workers::kafka::ensure_topic(&kafka, &topic)
        .await
        .unwrap();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic).key("k").payload("hello"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", unique_name("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&kafka.topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("no message within 30 s")
        .unwrap();
    assert_eq!(message.key(), Some(&b"k"[..]));
    assert_eq!(message.payload(), Some(&b"hello"[..]));
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn postgres_query() {
    let url = testenv_var("DATABASE_URL");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let (version,): (String,) = sqlx::query_as("select current_setting('server_version')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!version.is_empty());
    let (sum,): (i64,) = sqlx::query_as("select sum(x)::bigint from generate_series(1, 100) as x")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(sum, 5050);
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn object_store_put_get_list() {
    let bucket = testenv_var("FINTECH_TEST_BUCKET");
    testenv_var("AWS_ENDPOINT_URL");
    let store = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    let prefix = Path::from(unique_name("smoke"));
    let key = prefix.clone().join("hello.txt");
    store.put(&key, "hello".into()).await.unwrap();
    let body = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"hello");
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, key);
    assert_eq!(listed[0].size, 5);
}
