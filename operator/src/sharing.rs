//! One warehouse and one lake per pipeline. Two pipelines writing the same database would
//! share its fixed `raw`, `metadata` and `marts` schemas (each loader's audit, each
//! transform's merges over the other's rows), and two writing the same lake prefix would
//! interleave their batch records. So the operator refuses a pipeline whose warehouse
//! database or lake another pipeline already uses: the older pipeline keeps it (creation
//! time, then namespace and name), the younger one is scaled to zero with a condition that
//! names the other. These functions decide; the controller reads the Secrets and applies.

use crate::crd::FintechPipeline;

/// What a pipeline writes to, as comparable keys: its warehouse database (when its URL could
/// be read) and its lake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `namespace/name` of the pipeline.
    pub pipeline: String,
    /// When it was created (RFC 3339), which decides who was first.
    pub created: String,
    /// `host:port/database` of its warehouse, if its URL could be read.
    pub warehouse: Option<String>,
    /// Endpoint and `s3://bucket/prefix` of its lake.
    pub lake: String,
}

impl Claim {
    /// The claim of `pipeline`, whose warehouse URL is `warehouse_url` (`None` when its Secret
    /// is missing or unreadable).
    pub fn of(pipeline: &FintechPipeline, warehouse_url: Option<&str>) -> Self {
        let store = &pipeline.spec.object_store;
        Self {
            pipeline: format!(
                "{}/{}",
                pipeline.metadata.namespace.as_deref().unwrap_or_default(),
                pipeline.metadata.name.as_deref().unwrap_or_default()
            ),
            created: pipeline
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
            warehouse: warehouse_url.and_then(database_of),
            lake: format!(
                "{} {}",
                store.endpoint.trim_end_matches('/'),
                store.bucket_url.trim_end_matches('/')
            ),
        }
    }

    /// Whether `self` was there before `other`.
    fn precedes(&self, other: &Claim) -> bool {
        (&self.created, &self.pipeline) < (&other.created, &other.pipeline)
    }
}

/// Why a pipeline is refused: what it shares, and with whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `WarehouseInUse` or `LakeInUse`.
    pub reason: &'static str,
    /// What to do about it.
    pub message: String,
}

/// Whether `mine` must give way to one of `others`, an earlier pipeline with the same
/// warehouse database or lake.
pub fn refusal(mine: &Claim, others: &[Claim]) -> Option<Refusal> {
    let earlier = |same: &dyn Fn(&Claim) -> bool| {
        others
            .iter()
            .filter(|other| other.pipeline != mine.pipeline && other.precedes(mine) && same(other))
            .min_by(|a, b| (&a.created, &a.pipeline).cmp(&(&b.created, &b.pipeline)))
    };
    if let Some(database) = &mine.warehouse
        && let Some(other) = earlier(&|other| other.warehouse.as_ref() == Some(database))
    {
        return Some(Refusal {
            reason: "WarehouseInUse",
            message: format!(
                "database {database} is the warehouse of pipeline {}, created first; its raw, \
                 metadata and marts schemas cannot serve two pipelines, so this one is scaled \
                 to zero: point spec.warehouse at a Secret with another database",
                other.pipeline
            ),
        });
    }
    earlier(&|other| other.lake == mine.lake).map(|other| Refusal {
        reason: "LakeInUse",
        message: format!(
            "lake {} is written by pipeline {}, created first; two streamers would interleave \
             their batches, so this one is scaled to zero: give spec.objectStore.bucketUrl \
             another bucket or prefix",
            mine.lake.split(' ').next_back().unwrap_or_default(),
            other.pipeline
        ),
    })
}

/// `host:port/database` of a PostgreSQL URL (`postgres://user:password@host:port/db?…`), the
/// host lowercased and the port defaulted; `None` when it is not such a URL.
pub fn database_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, database) = rest.split_once('/')?;
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: [::1]:5432.
        Some(inside) => {
            let (address, after) = inside.split_once(']')?;
            (
                format!("[{address}]"),
                after.strip_prefix(':').unwrap_or_default(),
            )
        }
        None => match host_port.split_once(':') {
            Some((host, port)) => (host.to_owned(), port),
            None => (host_port.to_owned(), ""),
        },
    };
    let port = if port.is_empty() { "5432" } else { port };
    if host.is_empty() || database.is_empty() {
        return None;
    }
    Some(format!("{}:{port}/{database}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, created: &str, warehouse: &str, lake: &str) -> Claim {
        Claim {
            pipeline: format!("fintech/{name}"),
            created: created.to_owned(),
            warehouse: database_of(warehouse),
            lake: lake.to_owned(),
        }
    }

    #[test]
    fn a_database_is_its_host_port_and_name_whoever_connects() {
        assert_eq!(
            database_of("postgres://fintech:secret@Fintech-Postgres:5432/fintech?sslmode=disable"),
            Some("fintech-postgres:5432/fintech".to_owned())
        );
        assert_eq!(
            database_of("postgresql://other:pw@fintech-postgres/fintech"),
            Some("fintech-postgres:5432/fintech".to_owned())
        );
        assert_eq!(
            database_of("postgres://u@[::1]:6543/db"),
            Some("[::1]:6543/db".to_owned())
        );
        assert_eq!(database_of("mysql://host/db"), None);
        assert_eq!(database_of("postgres://host"), None);
    }

    #[test]
    fn the_younger_of_two_pipelines_on_one_database_is_refused_and_the_older_is_not() {
        let old = claim(
            "payments",
            "2026-12-01T00:00:00Z",
            "postgres://a@pg/fintech",
            "s3://a",
        );
        let young = claim(
            "refunds",
            "2026-12-02T00:00:00Z",
            "postgres://b:other@PG:5432/fintech",
            "s3://b",
        );
        let refused = refusal(&young, &[old.clone(), young.clone()]).unwrap();
        assert_eq!(refused.reason, "WarehouseInUse");
        assert!(
            refused.message.starts_with(
                "database pg:5432/fintech is the warehouse of pipeline fintech/payments"
            ),
            "{}",
            refused.message
        );
        assert_eq!(refusal(&old, &[old.clone(), young]), None);
    }

    #[test]
    fn pipelines_on_other_databases_and_lakes_are_left_alone() {
        let a = claim("a", "1", "postgres://pg/one", "http://minio s3://fintech/a");
        let b = claim("b", "2", "postgres://pg/two", "http://minio s3://fintech/b");
        assert_eq!(refusal(&b, &[a]), None);
    }

    #[test]
    fn a_shared_lake_is_refused_too() {
        let a = claim(
            "a",
            "1",
            "postgres://pg/one",
            "http://minio s3://fintech/lake",
        );
        let b = claim(
            "b",
            "2",
            "postgres://pg/two",
            "http://minio s3://fintech/lake",
        );
        let refused = refusal(&b, &[a]).unwrap();
        assert_eq!(refused.reason, "LakeInUse");
        assert!(
            refused
                .message
                .contains("lake s3://fintech/lake is written by pipeline fintech/a")
        );
    }

    #[test]
    fn without_a_readable_url_only_the_lake_is_compared() {
        let a = claim("a", "1", "postgres://pg/one", "s3://x");
        let mut b = claim("b", "2", "postgres://pg/one", "s3://y");
        b.warehouse = None;
        assert_eq!(refusal(&b, &[a]), None);
    }
}
