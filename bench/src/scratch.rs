//! Throwaway places a benchmark works in, so that runs never see each other's data: a fresh
//! prefix of the lake, a fresh database on the PostgreSQL server, a fresh Kafka topic. Each is
//! removed at the end unless the benchmark is asked to keep it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use sqlx::Connection;

use fintech_workers::kafka::KafkaOptions;
use fintech_workers::storage::StorageOptions;

/// Attempts at dropping a scratch database that is still in use.
const DROP_ATTEMPTS: u32 = 20;

/// A name unique to this process and moment, made of `[a-z0-9_-]` after `prefix`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{n}", std::process::id())
}

/// The lake `name` below the root of `lake`.
fn child_lake(lake: &StorageOptions, name: &str) -> StorageOptions {
    StorageOptions {
        lake_url: format!("{}/{name}", lake.lake_url.trim_end_matches('/')),
        ..lake.clone()
    }
}

/// The flags that point a child `fintech` process at `lake`.
pub fn lake_flags(lake: &StorageOptions) -> Vec<String> {
    let mut flags = vec!["--lake-url".to_owned(), lake.lake_url.clone()];
    if let Some(endpoint) = &lake.s3_endpoint {
        flags.extend(["--s3-endpoint".to_owned(), endpoint.clone()]);
    }
    if let Some(region) = &lake.s3_region {
        flags.extend(["--s3-region".to_owned(), region.clone()]);
    }
    flags
}

/// Deletes every object of `lake`; returns how many there were.
async fn delete_lake(lake: &StorageOptions) -> anyhow::Result<usize> {
    let (store, root) = lake.open()?;
    let locations = store.list(Some(&root)).map_ok(|meta| meta.location).boxed();
    let deleted: Vec<_> = store
        .delete_stream(locations)
        .try_collect()
        .await
        .with_context(|| format!("deleting the scratch lake {}", lake.lake_url))?;
    Ok(deleted.len())
}

/// The objects under `prefix` of `lake`.
pub async fn list_lake(
    lake: &StorageOptions,
    prefix: &str,
) -> anyhow::Result<Vec<object_store::ObjectMeta>> {
    let (store, root) = lake.open()?;
    let folder = prefix
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(root, |path, part| path.join(part));
    store
        .list(Some(&folder))
        .try_collect()
        .await
        .with_context(|| format!("listing {folder} in {}", lake.lake_url))
}

/// A database created for one benchmark on the server of an existing one.
#[derive(Debug)]
struct ScratchDatabase {
    server_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    /// Creates an empty database named after `label` on the server of `server_url`; the
    /// user of that URL must be allowed to create databases.
    async fn create(server_url: &str, label: &str) -> anyhow::Result<Self> {
        // The name is made here, never taken from input, so it is a plain identifier.
        let name = unique_name(&format!("bench_{label}")).replace('-', "_");
        let mut admin = sqlx::PgConnection::connect(server_url)
            .await
            .with_context(|| {
                format!(
                    "connecting to {}",
                    fintech_workers::warehouse::redact(server_url)
                )
            })?;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| {
                format!(
                    "creating the scratch database {name} (the user of --database-url needs CREATEDB)"
                )
            })?;
        admin.close().await.ok();
        let mut url = url::Url::parse(server_url).context("parsing --database-url")?;
        url.set_path(&name);
        Ok(Self {
            server_url: server_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database once the benchmark's own connections are closed. Autovacuum may
    /// still be working on it after a large load; PostgreSQL cancels autovacuum for a plain
    /// `DROP DATABASE` (whereas `WITH (FORCE)` would need the right to signal it), and any
    /// other session is waited out for a few seconds.
    async fn drop_database(self) -> anyhow::Result<()> {
        let mut admin = sqlx::PgConnection::connect(&self.server_url).await?;
        let statement = format!("drop database if exists {}", self.name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match sqlx::query(&statement).execute(&mut admin).await {
                Ok(_) => break,
                Err(error) if attempt < DROP_ATTEMPTS => {
                    tracing::debug!(%error, database = %self.name, "the scratch database is still in use; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("dropping the scratch database {}", self.name));
                }
            }
        }
        admin.close().await.ok();
        Ok(())
    }
}

/// The throwaway places a benchmark made, removed together at its end whatever happened.
#[derive(Debug, Default)]
pub struct Scratch {
    lakes: Vec<StorageOptions>,
    databases: Vec<ScratchDatabase>,
    topics: Vec<KafkaOptions>,
}

impl Scratch {
    /// A fresh prefix `name-…` below the root of `lake`.
    pub fn lake(&mut self, lake: &StorageOptions, name: &str) -> StorageOptions {
        let child = child_lake(lake, &unique_name(name));
        self.lakes.push(child.clone());
        child
    }

    /// A fresh database on the server of `server_url`; returns its URL.
    pub async fn database(&mut self, server_url: &str, label: &str) -> anyhow::Result<String> {
        let database = ScratchDatabase::create(server_url, label).await?;
        let url = database.url.clone();
        self.databases.push(database);
        Ok(url)
    }

    /// Options for a fresh topic whose name starts with `kafka.topic`; the producer creates it.
    pub fn topic(&mut self, kafka: &KafkaOptions) -> KafkaOptions {
        let options = KafkaOptions {
            topic: unique_name(&format!("{}-bench", kafka.topic)),
            ..kafka.clone()
        };
        self.topics.push(options.clone());
        options
    }

    /// Removes everything, or with `keep` only says where it is. Failures are logged, not
    /// returned: a leftover harms nothing and must not hide the benchmark's own result.
    pub async fn remove(self, keep: bool) {
        if keep {
            for lake in &self.lakes {
                tracing::info!(lake = %lake.lake_url, "kept the benchmark's lake");
            }
            for database in &self.databases {
                tracing::info!(database = %fintech_workers::warehouse::redact(&database.url), "kept the benchmark's database");
            }
            for kafka in &self.topics {
                tracing::info!(topic = %kafka.topic, "kept the benchmark's topic");
            }
            return;
        }
        for lake in &self.lakes {
            if let Err(error) = delete_lake(lake).await {
                tracing::warn!(%error, lake = %lake.lake_url, "could not delete the benchmark's lake");
            }
        }
        for database in self.databases {
            if let Err(error) = database.drop_database().await {
                tracing::warn!(%error, "could not drop the benchmark's database");
            }
        }
        for kafka in &self.topics {
            delete_topic(kafka).await;
        }
    }
}

/// Deletes the topic of `kafka`.
async fn delete_topic(kafka: &KafkaOptions) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let admin: Result<AdminClient<DefaultClientContext>, _> = kafka.client_config().create();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let result = match admin {
        Ok(admin) => admin
            .delete_topics(&[&kafka.topic], &options)
            .await
            .map(|_| ()),
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::warn!(%error, topic = %kafka.topic, "could not delete the benchmark's topic");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_lakes_nest_under_the_given_root_with_the_same_endpoint() {
        let lake = StorageOptions {
            lake_url: "s3://bucket/bench/".to_owned(),
            s3_endpoint: Some("http://127.0.0.1:9000".to_owned()),
            s3_region: None,
        };
        let child = child_lake(&lake, "load-1");
        assert_eq!(child.lake_url, "s3://bucket/bench/load-1");
        assert_eq!(
            lake_flags(&child),
            [
                "--lake-url",
                "s3://bucket/bench/load-1",
                "--s3-endpoint",
                "http://127.0.0.1:9000"
            ]
        );
    }

    #[test]
    fn unique_names_are_plain_identifiers_once_dashes_are_replaced() {
        let name = unique_name("bench_load").replace('-', "_");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
