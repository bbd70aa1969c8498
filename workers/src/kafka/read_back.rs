//! Reading the topic back from a point in time, outside any consumer group: how a producer
//! that restarted finds the payments it has still to settle.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::KafkaOptions;

/// Calls `each(&mut state, payload)` for every message the broker stamped at or after
/// `since`, partition by partition in offset order, up to the end each partition had when the
/// read began. Runs on a blocking thread; returns how many messages it read, and `state`.
pub async fn read_since<T: Send + 'static>(
    options: &KafkaOptions,
    since: DateTime<Utc>,
    state: T,
    each: fn(&mut T, &[u8]),
) -> Result<(u64, T), KafkaError> {
    let options = options.clone();
    tokio::task::spawn_blocking(move || read_blocking(&options, since, state, each))
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}

fn read_blocking<T>(
    options: &KafkaOptions,
    since: DateTime<Utc>,
    mut state: T,
    each: fn(&mut T, &[u8]),
) -> Result<(u64, T), KafkaError> {
    let timeout = Duration::from_secs(options.timeout_secs);
    let mut config = options.client_config();
    // Partitions are assigned by hand; the group id is required by the client but neither
    // joined nor committed to.
    config
        .set(
            "group.id",
            format!("fintech-read-back-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A read-back runs beside a worker in its pod (the producer at start, `bank-file` in
        // the loader's), within the pod's memory limit: librdkafka's defaults would buffer up
        // to 50 MB per fetch and 64 MB of prefetched messages.
        .set("fetch.max.bytes", "4194304")
        .set("queued.max.messages.kbytes", "8192");
    let consumer: BaseConsumer = config.create()?;
    let topic = options.topic.as_str();
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition_offset(topic, *partition, Offset::Offset(since.timestamp_millis()))?;
    }
    let starts = consumer.offsets_for_times(wanted, timeout)?;
    // Where each partition ends now: the read stops there, so messages the producer sends
    // after its restart are not mistaken for earlier ones.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for element in starts.elements() {
        let partition = element.partition();
        let (_, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let Offset::Offset(start) = element.offset() else {
            continue; // nothing stamped since then
        };
        if start < high {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        }
    }
    if ends.is_empty() {
        return Ok((0, state));
    }
    consumer.assign(&assignment)?;
    let mut read = 0;
    while !ends.is_empty() {
        let message = match consumer.poll(timeout) {
            Some(message) => message?,
            None => {
                return Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ));
            }
        };
        let partition = message.partition();
        let Some(&end) = ends.get(&partition) else {
            continue;
        };
        if message.offset() < end {
            each(&mut state, message.payload().unwrap_or_default());
            read += 1;
        }
        if message.offset() + 1 >= end {
            ends.remove(&partition);
        }
    }
    Ok((read, state))
}
