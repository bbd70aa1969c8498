//! Where the streamer reads messages: a Kafka consumer group in a cluster, an in-process
//! channel in the quickstart. Both implement [`MessageSource`], so the streamer has one code
//! path and one commit rule.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::sink::Message;

/// One message as the source delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    /// The partition it was read from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The broker's timestamp, milliseconds since the epoch, if any.
    pub timestamp_ms: Option<i64>,
    /// The key bytes, if any.
    pub key: Option<Vec<u8>>,
    /// The payload bytes, if any.
    pub payload: Option<Vec<u8>>,
}

impl SourceMessage {
    /// Bytes of key and payload, for batch size caps.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.payload.as_ref().map_or(0, Vec::len)
    }
}

/// What a source hands the streamer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// A message.
    Message(SourceMessage),
    /// These partitions are now this reader's.
    Assigned(Vec<i32>),
    /// These partitions are no longer this reader's; anything read from them and not yet
    /// committed must be dropped, since their new owner reads it again.
    Revoked(Vec<i32>),
}

/// Errors of a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Committing offsets to Kafka failed (for example because the broker is unreachable).
    #[error("committing offsets to kafka failed: {0}")]
    Commit(#[source] rdkafka::error::KafkaError),
    /// The group refused the commit because this reader is no longer the partitions' owner,
    /// or is about to stop being it: a rebalance is under way, or the group has moved on
    /// without it (its session expired, another instance took its place). Nothing was
    /// committed; the partitions' next owner reads the batch again.
    #[error("kafka refused the commit: this member no longer owns the partitions ({0})")]
    CommitRefused(#[source] rdkafka::error::KafkaError),
    /// A partition could not be read again from an earlier offset.
    #[error("cannot read partition {partition} again from offset {offset}: {reason}")]
    Rewind {
        /// The partition.
        partition: i32,
        /// The offset it was to be read from.
        offset: i64,
        /// Why.
        reason: String,
    },
}

/// A partitioned, replayable stream of messages with committed positions.
pub trait MessageSource {
    /// The topic read.
    fn topic(&self) -> &str;

    /// The next event; `None` when the source has ended for good.
    fn next(&mut self) -> impl Future<Output = Result<Option<SourceEvent>, SourceError>> + Send;

    /// Commits, for each partition, the offset of the next message to read.
    fn commit(
        &mut self,
        positions: &[(i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// Reads each partition of `positions` again from its offset: the next message of the
    /// partition handed out is the one at that offset. The streamer calls it for a batch it
    /// read but did not commit (its batch record was fenced, or the commit was refused), so
    /// that it never commits past messages it did not store. A partition this reader no
    /// longer owns is left alone (its owner reads from the committed offset); a source that
    /// cannot read a message twice returns [`SourceError::Rewind`].
    fn rewind(
        &mut self,
        positions: &[(i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Committed positions of an [`InProcessSource`], shared with whoever persists them.
pub type CommittedPositions = Arc<Mutex<HashMap<i32, i64>>>;

/// An in-process source: reads the channel of a [`crate::sink::ChannelSink`] and numbers
/// messages like a Kafka topic would, one offset sequence per partition, partitioned by key.
pub struct InProcessSource {
    topic: String,
    receiver: mpsc::Receiver<Message>,
    partitions: i32,
    next_offsets: HashMap<i32, i64>,
    committed: CommittedPositions,
    announced: bool,
}

impl InProcessSource {
    /// A source of `partitions` partitions whose offsets continue from `committed` (empty for
    /// a new topic), so that a second run never reuses an offset of the first.
    pub fn new(
        topic: &str,
        receiver: mpsc::Receiver<Message>,
        partitions: i32,
        committed: CommittedPositions,
    ) -> Self {
        let next_offsets = committed
            .lock()
            .map(|positions| positions.clone())
            .unwrap_or_default();
        Self {
            topic: topic.to_owned(),
            receiver,
            partitions: partitions.max(1),
            next_offsets,
            committed,
            announced: false,
        }
    }

    /// The partition of a key: a stable hash (FNV-1a), so a payment and its settlement share
    /// a partition as they do in Kafka.
    pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
        let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
        (hash % partitions.max(1) as u64) as i32
    }
}

impl MessageSource for InProcessSource {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        if !self.announced {
            self.announced = true;
            return Ok(Some(SourceEvent::Assigned((0..self.partitions).collect())));
        }
        let Some(message) = self.receiver.recv().await else {
            return Ok(None);
        };
        let partition = Self::partition_of(message.key.as_bytes(), self.partitions);
        let offset = self.next_offsets.entry(partition).or_insert(0);
        let current = *offset;
        *offset += 1;
        Ok(Some(SourceEvent::Message(SourceMessage {
            partition,
            offset: current,
            timestamp_ms: Some(chrono::Utc::now().timestamp_millis()),
            key: Some(message.key.into_bytes()),
            payload: Some(message.payload),
        })))
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        if let Ok(mut committed) = self.committed.lock() {
            for (partition, offset) in positions {
                committed.insert(*partition, *offset);
            }
        }
        Ok(())
    }

    /// The channel hands each message out once, so nothing can be read again; this is
    /// reached only when another streamer writes the same lake (see
    /// [`crate::streamer::Streamer`]), which the in-process pipeline does not support.
    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        match positions.first() {
            None => Ok(()),
            Some((partition, offset)) => Err(SourceError::Rewind {
                partition: *partition,
                offset: *offset,
                reason: "the in-process channel cannot replay; is another streamer writing \
                         this lake?"
                    .to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str) -> Message {
        Message {
            key: key.to_owned(),
            payload: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn numbers_messages_per_partition_and_continues_after_commit() {
        let (sender, receiver) = mpsc::channel(16);
        let committed = CommittedPositions::default();
        let mut source = InProcessSource::new("t", receiver, 2, committed.clone());
        assert_eq!(
            source.next().await.unwrap(),
            Some(SourceEvent::Assigned(vec![0, 1]))
        );
        for key in ["a", "b", "a", "c"] {
            sender.send(message(key)).await.unwrap();
        }
        drop(sender);
        let mut seen = Vec::new();
        while let Some(SourceEvent::Message(m)) = source.next().await.unwrap() {
            seen.push((m.partition, m.offset, m.key.unwrap()));
        }
        assert_eq!(seen.len(), 4);
        // The same key always lands in the same partition, offsets count up per partition.
        assert_eq!(seen[0].0, seen[2].0);
        assert_eq!(seen[2].1, seen[0].1 + 1);
        source.commit(&[(0, 5), (1, 7)]).await.unwrap();

        let (_sender, receiver) = mpsc::channel::<Message>(1);
        let again = InProcessSource::new("t", receiver, 2, committed.clone());
        assert_eq!(again.next_offsets, HashMap::from([(0, 5), (1, 7)]));
    }
}
