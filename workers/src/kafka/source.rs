//! The Kafka source: a consumer-group member with auto-commit off. Offsets are committed only
//! by the streamer, synchronously, after the batch they cover is stored.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::KafkaOptions;
use crate::source::{MessageSource, SourceError, SourceEvent, SourceMessage};

/// Pause after a consumer error before reading again.
const RECEIVE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Labels of the per-partition lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The partition.
    pub partition: String,
}

/// Consumer lag per partition, from librdkafka's statistics.
pub type LagGauge = Family<PartitionLabels, Gauge>;

/// Turns rebalance callbacks into [`SourceEvent`]s and statistics into lag gauges.
struct GroupContext {
    topic: String,
    events: Arc<Mutex<VecDeque<SourceEvent>>>,
    lag: LagGauge,
}

fn partitions_of(list: &TopicPartitionList, topic: &str) -> Vec<i32> {
    list.elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect()
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                // librdkafka reports -1 for partitions it does not consume, and a pseudo
                // partition -1 for unassigned messages.
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    self.lag
                        .get_or_create(&PartitionLabels {
                            partition: partition.to_string(),
                        })
                        .set(stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let partitions = partitions_of(list, &self.topic);
            tracing::info!(?partitions, "partitions revoked");
            if let Ok(mut events) = self.events.lock() {
                events.push_back(SourceEvent::Revoked(partitions));
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let partitions = partitions_of(list, &self.topic);
                tracing::info!(?partitions, "partitions assigned");
                if let Ok(mut events) = self.events.lock() {
                    events.push_back(SourceEvent::Assigned(partitions));
                }
            }
            Rebalance::Error(error) => tracing::error!(%error, "rebalance failed"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A member of a consumer group reading one topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer<GroupContext>>,
    topic: String,
    events: Arc<Mutex<VecDeque<SourceEvent>>>,
}

impl KafkaSource {
    /// Joins `group_id` and subscribes to the topic of `options`.
    pub fn new(options: &KafkaOptions, group_id: &str, lag: LagGauge) -> Result<Self, KafkaError> {
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let context = GroupContext {
            topic: options.topic.clone(),
            events: events.clone(),
            lag,
        };
        let mut config = options.client_config();
        super::set_defaults(
            &mut config,
            &[
                ("auto.offset.reset", "earliest"),
                ("statistics.interval.ms", "5000"),
                // A batch is written between two polls; leave room for a slow object store.
                ("max.poll.interval.ms", "600000"),
                // librdkafka pauses fetching for fetch.queue.backoff.ms (1 s by default)
                // whenever its prefetch queue is over its limits, which starves a streamer
                // that drains the queue faster than that; a 16 MB queue also bounds its
                // memory. Both measured in docs/benchmarks.md.
                ("fetch.queue.backoff.ms", "20"),
                ("queued.max.messages.kbytes", "16384"),
            ],
        );
        // The commit rule depends on these, so --kafka-property cannot change them.
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer<GroupContext> = config.create_with_context(context)?;
        consumer.subscribe(&[&options.topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: options.topic.clone(),
            events,
        })
    }

    fn queued(&self) -> Option<SourceEvent> {
        self.events.lock().ok()?.pop_front()
    }
}

impl MessageSource for KafkaSource {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        if let Some(event) = self.queued() {
            return Ok(Some(event));
        }
        let message = loop {
            match self.consumer.recv().await {
                Ok(message) => break message,
                // librdkafka retries by itself (a topic not created yet, a broker restarting);
                // report and wait rather than stop the streamer.
                Err(error) => {
                    tracing::warn!(%error, "kafka consumer error; retrying");
                    tokio::time::sleep(RECEIVE_RETRY).await;
                }
            }
        };
        let message = SourceMessage {
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
        };
        // A rebalance during recv() happened before this message was handed out.
        if let Some(event) = self.queued() {
            if let Ok(mut events) = self.events.lock() {
                events.push_back(SourceEvent::Message(message));
            }
            return Ok(Some(event));
        }
        Ok(Some(SourceEvent::Message(message)))
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in positions {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .map_err(SourceError::Commit)?;
        }
        let consumer = self.consumer.clone();
        // A synchronous commit blocks its thread until the broker answers.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| SourceError::Commit(KafkaError::Canceled))?
            .map_err(SourceError::Commit)
    }
}
