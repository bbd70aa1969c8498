//! The Kaggle replay from the object store (MinIO here), as a producer pod reads it: the
//! export is streamed from `s3://bucket/key`, its rows come out in order at the configured
//! share, and a missing object fails at start with its URL.

mod common;

use common::{kaggle_export as export, test_lake, testenv_var};
use fintech_workers::event::EventSource;
use fintech_workers::kaggle::KaggleLocation;
use fintech_workers::producer::{EventStream, ProducerMetrics, StreamConfig};
use object_store::{ObjectStoreExt, PutPayload};

/// Stores `body` under a fresh key of the test bucket; returns its `s3://` URL.
async fn upload(body: String) -> String {
    let lake = test_lake("kaggle");
    let (store, root) = lake.open().unwrap();
    let key = root.clone().join("fraudTrain.csv");
    store.put(&key, PutPayload::from(body)).await.unwrap();
    format!("s3://{}/{key}", testenv_var("FINTECH_TEST_BUCKET"))
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn an_export_in_the_object_store_is_replayed_in_order_at_its_share() {
    // About 1.3 MB: the object arrives in many chunks.
    let url = upload(export(5_000)).await;
    let config = StreamConfig {
        kaggle_csv: Some(KaggleLocation::parse(&url, None, None)),
        kaggle_share: 0.7,
        settlement_share: 0.0,
        ..StreamConfig::default()
    };
    // Opened on a runtime thread, as the producer does.
    let mut stream = EventStream::new(&config, ProducerMetrics::default()).unwrap();
    let mut kaggle = 0;
    for _ in 0..2_000 {
        let event = stream.next_message().unwrap().event;
        if event.source == EventSource::Kaggle {
            assert_eq!(event.merchant_name, format!("Merchant {kaggle}, Ltd"));
            kaggle += 1;
        }
    }
    assert!(
        (1_300..1_500).contains(&kaggle),
        "{kaggle} of 2000 payments from the export at a 70% share"
    );
}

#[test]
#[ignore = "needs the test environment: scripts/test.sh"]
fn a_missing_export_fails_at_start_with_its_url() {
    let url = format!(
        "s3://{}/{}/fraudTrain.csv",
        testenv_var("FINTECH_TEST_BUCKET"),
        common::unique_name("missing")
    );
    let error = KaggleLocation::parse(&url, None, None)
        .open()
        .err()
        .expect("a missing object cannot be opened")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "cannot read Kaggle file {url} from the object store:"
        )),
        "{error}"
    );
}

#[tokio::test]
#[ignore = "needs the test environment: scripts/test.sh"]
async fn an_object_that_is_not_the_export_is_refused_by_its_header() {
    let url = upload("id,amount\n1,2\n".to_owned()).await;
    let error = KaggleLocation::parse(&url, None, None)
        .open()
        .err()
        .expect("a wrong header is refused")
        .to_string();
    assert!(
        error.contains(&format!("{url} is not a Kaggle fraudTrain.csv export")),
        "{error}"
    );
}
