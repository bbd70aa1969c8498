//! The path from payments to bronze inside one process: the producer's [`EventStream`] into a
//! bounded channel that the real [`Streamer`] reads as it would a Kafka topic. The quickstart
//! runs on it, and the benchmarks and tests fill lakes with it, so their files, manifests and
//! batch records are exactly what a streamer in a pod writes.

use tokio_util::sync::CancellationToken;

use crate::bronze::Lake;
use crate::producer::{self, EventStream, ProduceError, ProduceSummary, RunLimits};
use crate::sink::ChannelSink;
use crate::source::{CommittedPositions, InProcessSource};
use crate::streamer::{BatchPolicy, StreamError, StreamSummary, Streamer, StreamerMetrics};

/// The topic the in-process channel stands for; the loader's default.
pub const TOPIC: &str = "transactions";

/// Messages the channel holds before the producer waits for the streamer: enough to keep
/// both busy, few enough to bound memory.
pub const CHANNEL_CAPACITY: usize = 10_000;

/// Why a flow stopped.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The producer failed.
    #[error("producing failed")]
    Produce(#[source] ProduceError),
    /// The streamer failed.
    #[error("streaming into bronze failed")]
    Stream(#[source] StreamError),
    /// The streamer's task panicked.
    #[error("the streamer task stopped abnormally")]
    Task(#[source] tokio::task::JoinError),
}

/// What a flow did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flowed {
    /// The producer's side.
    pub produced: ProduceSummary,
    /// The streamer's side.
    pub streamed: StreamSummary,
}

/// A producer and a streamer joined by an in-process channel, writing into one lake.
pub struct InProcessPipeline {
    lake: Lake,
    partitions: i32,
    positions: CommittedPositions,
    policy: BatchPolicy,
    metrics: StreamerMetrics,
    channel_capacity: usize,
}

impl InProcessPipeline {
    /// A pipeline into `lake` over a topic of `partitions` partitions that starts at offset 0,
    /// with the streamer's default batch policy.
    pub fn new(lake: Lake, partitions: i32) -> Self {
        Self {
            lake,
            partitions,
            positions: CommittedPositions::default(),
            policy: BatchPolicy::default(),
            metrics: StreamerMetrics::default(),
            channel_capacity: CHANNEL_CAPACITY,
        }
    }

    /// Starts each partition at its committed offset in `positions` and commits there, as a
    /// Kafka consumer group would. The in-process topic cannot replay, so a caller that runs
    /// several flows into one lake keeps the positions between them: offsets then go on
    /// from where the last flow stopped and no file name is taken twice.
    pub fn with_positions(mut self, positions: CommittedPositions) -> Self {
        self.positions = positions;
        self
    }

    /// When the streamer closes a batch.
    pub fn with_policy(mut self, policy: BatchPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The streamer's metrics, for a caller that watches its progress.
    pub fn with_metrics(mut self, metrics: StreamerMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Messages the channel holds before the producer waits.
    pub fn with_channel_capacity(mut self, capacity: usize) -> Self {
        self.channel_capacity = capacity;
        self
    }

    /// Produces `count` messages of `events` and streams them into the lake; returns once
    /// the streamer has written and committed the last of them.
    pub async fn run(
        self,
        events: &mut EventStream,
        count: u64,
        progress: &indicatif::ProgressBar,
    ) -> Result<Flowed, FlowError> {
        let (mut sink, receiver) = ChannelSink::new(self.channel_capacity);
        let source = InProcessSource::new(TOPIC, receiver, self.partitions, self.positions);
        let streamer = Streamer::new(source, self.lake, self.policy, self.metrics);
        // The streamer stops when the channel closes, after its last batch; it needs no token.
        let streaming = tokio::spawn(streamer.run(CancellationToken::new()));
        let limits = RunLimits {
            count: Some(count),
            rate: None,
        };
        let produced = producer::run(
            events,
            &mut sink,
            limits,
            &CancellationToken::new(),
            progress,
        )
        .await;
        // Closing the channel ends the stream even when the producer failed, so the task
        // never outlives this call.
        drop(sink);
        let streamed = streaming.await.map_err(FlowError::Task)?;
        let produced = produced.map_err(FlowError::Produce)?;
        let streamed = streamed.map_err(FlowError::Stream)?;
        Ok(Flowed { produced, streamed })
    }
}
