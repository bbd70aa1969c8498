//! Where the producer's messages go: Kafka in a cluster, an in-process channel in the
//! quickstart. Both implement [`EventSink`], so the producer has one code path.

use std::future::Future;

use tokio::sync::mpsc;

/// One message for the `transactions` topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The Kafka key: the payment's `transaction_id`, so that a payment and its settlement
    /// land in the same partition, in order.
    pub key: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// What a sink delivered, once flushed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Messages the destination acknowledged.
    pub delivered: u64,
    /// Messages that could not be delivered (each also logged with its error).
    pub failed: u64,
}

/// Errors that stop a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The receiving side of an in-process channel is gone.
    #[error("the in-process consumer stopped; {undelivered} message(s) were not handed over")]
    ChannelClosed {
        /// Messages accepted but not handed over, including the one being sent.
        undelivered: u64,
    },
    /// Kafka refused a message for a reason that retrying will not fix.
    #[error("kafka refused a message: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// A destination for messages, with back-pressure and an explicit final flush.
pub trait EventSink {
    /// Hands one message to the sink; waits while the sink is full.
    fn send(&mut self, message: Message) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// What was delivered and failed so far, without waiting.
    fn report(&self) -> DeliveryReport;

    /// Waits until every message sent so far is delivered or has definitively failed.
    fn flush(&mut self) -> impl Future<Output = Result<DeliveryReport, SinkError>> + Send;
}

/// The in-process sink: a bounded channel, so a slow consumer slows the producer down
/// instead of growing memory.
pub struct ChannelSink {
    sender: mpsc::Sender<Message>,
    delivered: u64,
}

impl ChannelSink {
    /// A sink and the receiver the in-process consumer reads, holding at most `capacity`
    /// messages in between.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Message>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (
            Self {
                sender,
                delivered: 0,
            },
            receiver,
        )
    }
}

impl EventSink for ChannelSink {
    async fn send(&mut self, message: Message) -> Result<(), SinkError> {
        self.sender
            .send(message)
            .await
            .map_err(|_| SinkError::ChannelClosed { undelivered: 1 })?;
        self.delivered += 1;
        Ok(())
    }

    fn report(&self) -> DeliveryReport {
        // A message in the channel is handed over: the receiver owns it from here.
        DeliveryReport {
            delivered: self.delivered,
            failed: 0,
        }
    }

    async fn flush(&mut self) -> Result<DeliveryReport, SinkError> {
        Ok(self.report())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u32) -> Message {
        Message {
            key: format!("k{i}"),
            payload: vec![],
        }
    }

    #[tokio::test]
    async fn channel_sink_applies_back_pressure_at_capacity() {
        let (mut sink, mut receiver) = ChannelSink::new(2);
        sink.send(message(1)).await.unwrap();
        sink.send(message(2)).await.unwrap();
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(50), sink.send(message(3)));
        assert!(blocked.await.is_err(), "a full channel must make send wait");
        assert_eq!(receiver.recv().await.unwrap().key, "k1");
        sink.send(message(4)).await.unwrap();
        assert_eq!(sink.flush().await.unwrap().delivered, 3);
    }

    #[tokio::test]
    async fn channel_sink_reports_a_stopped_consumer() {
        let (mut sink, receiver) = ChannelSink::new(2);
        drop(receiver);
        let error = sink.send(message(1)).await.unwrap_err();
        assert!(error.to_string().contains("in-process consumer stopped"));
    }
}
