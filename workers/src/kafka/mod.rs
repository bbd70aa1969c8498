//! Kafka connection settings and the `transactions` topic, shared by every Kafka client.

mod read_back;
mod sink;
mod source;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

pub use read_back::read_since;
pub use sink::KafkaSink;
pub use source::{KafkaSource, LagGauge, PartitionLabels};

/// How long messages stay in the topic: 7 days, the bronze layer's replay window.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Connection settings for Kafka, shared by the producer and the streamer.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct KafkaOptions {
    /// Comma-separated bootstrap servers.
    #[arg(
        long,
        env = "FINTECH_KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,

    /// The topic payment events flow through.
    #[arg(long, env = "FINTECH_KAFKA_TOPIC", default_value = "transactions")]
    pub topic: String,

    /// Extra librdkafka settings (for example `security.protocol=SASL_SSL`), repeatable;
    /// from the environment as a comma-separated list.
    #[arg(long = "kafka-property", env = "FINTECH_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property)]
    pub properties: Vec<(String, String)>,

    /// How long an administrative request (such as creating the topic) may take.
    #[arg(
        long = "kafka-timeout-secs",
        env = "FINTECH_KAFKA_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub timeout_secs: u64,
}

/// Settings of the topic when the producer has to create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct TopicOptions {
    /// Partitions of the topic if it is created; an existing topic keeps its own.
    #[arg(long, env = "FINTECH_KAFKA_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,

    /// Replication factor of the topic if it is created.
    #[arg(long, env = "FINTECH_KAFKA_REPLICATION_FACTOR", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub replication_factor: i32,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

impl KafkaOptions {
    /// A client configuration with the connection settings applied.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "fintech");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Sets each of `defaults` that `--kafka-property` did not set already.
fn set_defaults(config: &mut ClientConfig, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if config.get(key).is_none() {
            config.set(*key, *value);
        }
    }
}

/// What [`ensure_topic`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// The topic was created.
    Created,
    /// The topic was there already.
    Existed,
}

/// Creates the topic with 7-day retention unless it exists.
pub async fn ensure_topic(
    kafka: &KafkaOptions,
    topic: &TopicOptions,
) -> Result<TopicState, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let retention_ms = RETENTION.as_millis().to_string();
    let new_topic = NewTopic::new(
        &kafka.topic,
        topic.partitions,
        TopicReplication::Fixed(topic.replication_factor),
    )
    .set("retention.ms", &retention_ms);
    let timeout = Some(Duration::from_secs(kafka.timeout_secs));
    let options = AdminOptions::new()
        .request_timeout(timeout)
        .operation_timeout(timeout);
    let results = admin.create_topics([&new_topic], &options).await?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(TopicState::Created),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicState::Existed),
        Some(Err((_, code))) => Err(KafkaError::AdminOp(code)),
        None => Err(KafkaError::AdminOpCreation(
            "the broker returned no result for the topic".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_key_value_pairs() {
        assert_eq!(
            parse_property("security.protocol = SASL_SSL").unwrap(),
            ("security.protocol".to_owned(), "SASL_SSL".to_owned())
        );
        assert!(parse_property("no-equals").is_err());
        assert!(parse_property("=value").is_err());
    }
}
