//! [`LogSource`]: a replayable partitioned log with committed positions, Kafka's contract in
//! memory. The streamer's tests drive the streamer with it, and the source conformance suite
//! (`tests/source.rs`) holds it to the same guarantees as the real sources.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use fintech_workers::source::{
    CommittedPositions, MessageSource, SourceError, SourceEvent, SourceMessage,
};
use tokio::sync::Notify;

/// The topic a [`LogSource`] reads.
pub const TOPIC: &str = "transactions";

/// A partitioned log that writers append to and readers share, like a Kafka topic.
#[derive(Clone)]
pub struct Log {
    state: Arc<Mutex<LogState>>,
    appended: Arc<Notify>,
}

struct LogState {
    partitions: BTreeMap<i32, Vec<SourceMessage>>,
    /// Nothing more will be appended.
    closed: bool,
}

impl Log {
    /// An empty, open log of `partitions` partitions.
    pub fn new(partitions: i32) -> Self {
        Self::with((0..partitions).map(|p| (p, Vec::new())).collect(), false)
    }

    /// A closed log holding `messages`, whose offsets are their indices in their partition.
    pub fn of(messages: &BTreeMap<i32, Vec<SourceMessage>>) -> Self {
        Self::with(messages.clone(), true)
    }

    fn with(partitions: BTreeMap<i32, Vec<SourceMessage>>, closed: bool) -> Self {
        Self {
            state: Arc::new(Mutex::new(LogState { partitions, closed })),
            appended: Arc::new(Notify::new()),
        }
    }

    /// Appends a message to `partition` at the next offset and wakes waiting readers.
    pub fn append(
        &self,
        partition: i32,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        timestamp_ms: Option<i64>,
    ) -> SourceMessage {
        let mut state = self.state.lock().unwrap();
        assert!(!state.closed, "appending to a closed log");
        let messages = state
            .partitions
            .get_mut(&partition)
            .unwrap_or_else(|| panic!("the log has no partition {partition}"));
        let message = SourceMessage {
            partition,
            offset: messages.len() as i64,
            timestamp_ms,
            key,
            payload,
        };
        messages.push(message.clone());
        drop(state);
        self.appended.notify_waiters();
        message
    }

    /// Ends the log: readers that end (see [`LogSource::ends`]) end once they have read it.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.appended.notify_waiters();
    }

    /// The partitions of the log.
    pub fn partitions(&self) -> Vec<i32> {
        self.state
            .lock()
            .unwrap()
            .partitions
            .keys()
            .copied()
            .collect()
    }
}

/// A reader of a [`Log`] that commits into shared positions, as one member of a consumer
/// group that owns every partition.
pub struct LogSource {
    log: Log,
    committed: CommittedPositions,
    /// For each partition, the index of the next message to read.
    pub cursor: HashMap<i32, i64>,
    /// Events handed out before any message of the log.
    pub events: VecDeque<SourceEvent>,
    /// Whether `next` ends (`None`) once the log is closed and read, or waits forever like a
    /// Kafka consumer.
    pub ends: bool,
}

impl LogSource {
    /// A reader of a closed log holding `log`, resuming at the `committed` positions.
    pub fn new(log: &BTreeMap<i32, Vec<SourceMessage>>, committed: &CommittedPositions) -> Self {
        Self::reading(Log::of(log), committed)
    }

    /// A reader of `log` resuming at the `committed` positions.
    pub fn reading(log: Log, committed: &CommittedPositions) -> Self {
        let partitions = log.partitions();
        let cursor = partitions
            .iter()
            .map(|p| (*p, committed.lock().unwrap().get(p).copied().unwrap_or(0)))
            .collect();
        Self {
            log,
            committed: committed.clone(),
            cursor,
            events: [SourceEvent::Assigned(partitions)].into(),
            ends: true,
        }
    }
}

impl MessageSource for LogSource {
    fn topic(&self) -> &str {
        TOPIC
    }

    async fn next(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        if let Some(event) = self.events.pop_front() {
            return Ok(Some(event));
        }
        loop {
            // Registered before the log is looked at, so no append is missed in between.
            let appended = self.log.appended.notified();
            let mut appended = std::pin::pin!(appended);
            appended.as_mut().enable();
            {
                let state = self.log.state.lock().unwrap();
                // The lowest partition with unread messages first.
                for (partition, messages) in &state.partitions {
                    let cursor = self.cursor.get_mut(partition).unwrap();
                    if let Some(message) = messages.get(*cursor as usize) {
                        *cursor += 1;
                        return Ok(Some(SourceEvent::Message(message.clone())));
                    }
                }
                if state.closed && self.ends {
                    return Ok(None);
                }
            }
            appended.await;
        }
    }

    async fn commit(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        let mut committed = self.committed.lock().unwrap();
        for (partition, offset) in positions {
            committed.insert(*partition, *offset);
        }
        Ok(())
    }

    async fn rewind(&mut self, positions: &[(i32, i64)]) -> Result<(), SourceError> {
        for (partition, offset) in positions {
            if let Some(cursor) = self.cursor.get_mut(partition) {
                *cursor = *offset;
            }
        }
        Ok(())
    }
}
