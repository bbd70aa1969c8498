//! The Kafka source: a consumer-group member with auto-commit off. Offsets are committed only
//! by the streamer, synchronously, after the batch they cover is stored. A commit the group
//! refuses because this member no longer owns the partitions is reported as
//! [`SourceError::CommitRefused`], never as a success.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::KafkaOptions;
use crate::source::{MessageSource, SourceError, SourceEvent, SourceMessage};

/// Pause after a consumer error before reading again.
const RECEIVE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a seek may take to reach the fetcher; past it, the consumer's state is unknown.
const SEEK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a commit failed because the group no longer takes this member's commits for the
/// partitions: a rebalance is under way, the member's generation or epoch is stale, its
/// session expired (the coordinator forgot it), it lost its assignment, or another instance
/// with its `group.instance.id` fenced it. None of these is worth retrying, and none is a
/// success: the partitions' next owner reads the batch again.
fn is_commit_refusal(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ConsumerCommit(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedInstanceId
                | RDKafkaErrorCode::FencedMemberEpoch
                | RDKafkaErrorCode::StaleMemberEpoch
                | RDKafkaErrorCode::AssignmentLost
                | RDKafkaErrorCode::Fenced
        )
    )
}

/// Labels of the per-partition lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The partition.
    pub partition: String,
}

/// Consumer lag from librdkafka's statistics: per partition this member consumes (the
/// `consumer_lag` metric) and in total (the `/status` backlog). Clones share the values.
#[derive(Clone, Debug, Default)]
pub struct LagGauge {
    partitions: Family<PartitionLabels, Gauge>,
    total: Gauge,
}

impl LagGauge {
    /// The per-partition gauges, to register as a metric.
    pub fn partitions(&self) -> Family<PartitionLabels, Gauge> {
        self.partitions.clone()
    }

    /// Messages behind the end of the partitions this member consumes, at the last
    /// statistics report.
    pub fn total(&self) -> u64 {
        u64::try_from(self.total.get()).unwrap_or(0)
    }

    /// Records one statistics report: `(partition, lag)` for every partition librdkafka
    /// knows, with a negative lag for those this member does not consume. A partition given
    /// away in a rebalance loses its gauge, so the metric does not keep its last lag forever.
    fn report(&self, partitions: impl IntoIterator<Item = (i32, i64)>) {
        let mut total = 0;
        for (partition, lag) in partitions {
            let labels = PartitionLabels {
                partition: partition.to_string(),
            };
            if lag >= 0 {
                self.partitions.get_or_create(&labels).set(lag);
                total += lag;
            } else {
                self.partitions.remove(&labels);
            }
        }
        self.total.set(total);
    }
}

/// Turns rebalance callbacks into [`SourceEvent`]s and statistics into lag gauges.
struct GroupContext {
    topic: String,
    events: Arc<Mutex<VecDeque<SourceEvent>>>,
    /// Wakes a `next()` waiting for a message: a rebalance must reach the streamer at once,
    /// not with the next message, or a member with nothing to read would go on treating
    /// partitions it lost as its own.
    wake: Arc<Notify>,
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
            // librdkafka reports a lag of -1 for partitions it does not consume, and a pseudo
            // partition -1 for unassigned messages.
            self.lag.report(
                topic
                    .partitions
                    .iter()
                    .filter(|(partition, _)| **partition >= 0)
                    .map(|(partition, stats)| (*partition, stats.consumer_lag)),
            );
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
            self.wake.notify_one();
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
                self.wake.notify_one();
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
    wake: Arc<Notify>,
}

impl KafkaSource {
    /// Joins `group_id` and subscribes to the topic of `options`.
    pub fn new(options: &KafkaOptions, group_id: &str, lag: LagGauge) -> Result<Self, KafkaError> {
        let events = Arc::new(Mutex::new(VecDeque::new()));
        let wake = Arc::new(Notify::new());
        let context = GroupContext {
            topic: options.topic.clone(),
            events: events.clone(),
            wake: wake.clone(),
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
            wake,
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
        let message = loop {
            if let Some(event) = self.queued() {
                return Ok(Some(event));
            }
            // Rebalance callbacks run while recv() polls; they wake this wait so that their
            // event is handed out even when no message follows. Dropping the pending recv()
            // loses no message.
            let received = tokio::select! {
                received = self.consumer.recv() => received,
                () = self.wake.notified() => continue,
            };
            match received {
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
            .map_err(|error| {
                if is_commit_refusal(&error) {
                    SourceError::CommitRefused(error)
                } else {
                    SourceError::Commit(error)
                }
            })
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        if positions.is_empty() {
            return Ok(());
        }
        // A message of those partitions held back during a rebalance is from before the seek.
        if let Ok(mut events) = self.events.lock() {
            events.retain(|event| {
                !matches!(event, SourceEvent::Message(m)
                    if positions.iter().any(|(partition, _)| *partition == m.partition))
            });
        }
        let rewind_error =
            |partition: i32, offset: i64, error: &dyn std::fmt::Display| SourceError::Rewind {
                partition,
                offset,
                reason: error.to_string(),
            };
        let mut list = TopicPartitionList::new();
        for (partition, offset) in positions {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .map_err(|e| rewind_error(*partition, *offset, &e))?;
        }
        let consumer = self.consumer.clone();
        let (first_partition, first_offset) = positions[0];
        // With a timeout, librdkafka waits until the fetcher is at the new offset and purges
        // what it had prefetched, so no message from before the seek is handed out after it.
        let (sought, assigned) = tokio::task::spawn_blocking(move || {
            let sought = consumer.seek_partitions(list, SEEK_TIMEOUT);
            (sought, consumer.assignment())
        })
        .await
        .map_err(|e| rewind_error(first_partition, first_offset, &e))?;
        let sought = sought.map_err(|e| rewind_error(first_partition, first_offset, &e))?;
        let assigned = assigned.map_err(|e| rewind_error(first_partition, first_offset, &e))?;
        for element in sought.elements_for_topic(&self.topic) {
            let (partition, offset) = (element.partition(), element.offset().to_raw());
            let Err(error) = element.error() else {
                continue;
            };
            let offset = offset.unwrap_or_default();
            if assigned.find_partition(&self.topic, partition).is_some() {
                // Still ours, and it would go on after the batch that was not stored.
                return Err(rewind_error(partition, offset, &error));
            }
            tracing::info!(
                partition,
                offset,
                %error,
                "not reading the partition again: it is no longer assigned to this member, its new owner reads it from the committed offset"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_refused_for_lost_or_moving_partitions_is_a_refusal_not_a_failure() {
        for code in [
            RDKafkaErrorCode::RebalanceInProgress,
            RDKafkaErrorCode::IllegalGeneration,
            RDKafkaErrorCode::UnknownMemberId,
            RDKafkaErrorCode::FencedInstanceId,
            RDKafkaErrorCode::AssignmentLost,
        ] {
            assert!(
                is_commit_refusal(&KafkaError::ConsumerCommit(code)),
                "{code:?}"
            );
        }
        // A broker that cannot be reached is worth retrying: that is a failure.
        for error in [
            KafkaError::ConsumerCommit(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::ConsumerCommit(RDKafkaErrorCode::WaitingForCoordinator),
            KafkaError::Canceled,
        ] {
            assert!(!is_commit_refusal(&error), "{error}");
        }
    }

    #[test]
    fn a_partition_given_away_leaves_the_lag_metric_and_the_total() {
        let lag = LagGauge::default();
        lag.report([(0, 10), (1, 5), (2, -1)]);
        assert_eq!(lag.total(), 15);
        let gauge = |p: &str| {
            lag.partitions()
                .get(&PartitionLabels {
                    partition: p.to_owned(),
                })
                .map(|g| g.get())
        };
        assert_eq!(
            (gauge("0"), gauge("1"), gauge("2")),
            (Some(10), Some(5), None)
        );
        // Partition 1 went to another member.
        lag.report([(0, 3), (1, -1), (2, -1)]);
        assert_eq!(lag.total(), 3);
        assert_eq!((gauge("0"), gauge("1")), (Some(3), None));
    }
}
