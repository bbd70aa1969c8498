//! The Kafka sink: an idempotent producer whose deliveries are counted, never assumed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

use super::KafkaOptions;
use crate::sink::{DeliveryReport, EventSink, Message, SinkError};

/// Delivery errors logged one by one before only every 1000th is.
const LOGGED_FAILURES: u64 = 20;

/// Counts what the broker acknowledged and what failed for good (after librdkafka's own
/// retries, bounded by `delivery.timeout.ms`).
#[derive(Debug, Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone, Default)]
struct DeliveryContext(Arc<DeliveryCounter>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let failed = self.0.failed.fetch_add(1, Ordering::Relaxed) + 1;
                if failed <= LOGGED_FAILURES || failed.is_multiple_of(1000) {
                    tracing::error!(%error, failed, "kafka delivery failed");
                }
            }
        }
    }
}

/// Sends messages to the topic with `acks=all`, idempotence and zstd compression.
pub struct KafkaSink {
    producer: Arc<ThreadedProducer<DeliveryContext>>,
    counter: Arc<DeliveryCounter>,
    topic: String,
    flush_timeout: Duration,
}

impl KafkaSink {
    /// A producer for `options.topic`; `flush_timeout` bounds the final flush.
    pub fn new(options: &KafkaOptions, flush_timeout: Duration) -> Result<Self, KafkaError> {
        let context = DeliveryContext::default();
        let counter = context.0.clone();
        let mut config = options.client_config();
        super::set_defaults(
            &mut config,
            &[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("compression.type", "zstd"),
                ("linger.ms", "20"),
                ("batch.size", "1000000"),
                // 20,000 queued messages keep the broker busy (zstd batches of up to 1 MB)
                // at a quarter of the memory a 200,000-message queue takes; see
                // docs/benchmarks.md.
                ("queue.buffering.max.messages", "20000"),
            ],
        );
        let producer = Arc::new(config.create_with_context(context)?);
        Ok(Self {
            producer,
            counter,
            topic: options.topic.clone(),
            flush_timeout,
        })
    }
}

impl EventSink for KafkaSink {
    async fn send(&mut self, message: Message) -> Result<(), SinkError> {
        loop {
            let record = BaseRecord::to(&self.topic)
                .key(&message.key)
                .payload(&message.payload);
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // The local queue is full: wait for deliveries to drain it (back-pressure).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(SinkError::Kafka(error)),
            }
        }
    }

    fn report(&self) -> DeliveryReport {
        DeliveryReport {
            delivered: self.counter.delivered.load(Ordering::Relaxed),
            failed: self.counter.failed.load(Ordering::Relaxed),
        }
    }

    async fn flush(&mut self) -> Result<DeliveryReport, SinkError> {
        let producer = self.producer.clone();
        let timeout = self.flush_timeout;
        // flush blocks its thread until the queue is empty or the timeout passes.
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|error| {
                tracing::error!(%error, "the kafka flush task failed");
                SinkError::Kafka(KafkaError::Canceled)
            })?;
        let in_flight = u64::try_from(self.producer.in_flight_count()).unwrap_or(0);
        if let Err(error) = flushed {
            tracing::error!(%error, in_flight, "kafka flush did not complete; counting unsent messages as failed");
        }
        let report = self.report();
        Ok(DeliveryReport {
            failed: report.failed + in_flight,
            ..report
        })
    }
}
