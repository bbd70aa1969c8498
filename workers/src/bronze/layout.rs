//! Object keys of the bronze layer and the dead-letter queue.
//!
//! ```text
//! <root>/bronze/transactions/year=YYYY/month=MM/day=DD/<topic>-p<partition>-o<first>-<last>.parquet
//! <root>/dead_letter/transactions/year=YYYY/month=MM/day=DD/<topic>-p<partition>-o<first>-<last>.parquet
//! <root>/_streamer/<topic>/partition=<partition>.json
//! <root>/_manifests/<topic>/date=YYYY-MM-DD/<topic>-p<partition>-o<first>-<last>.json
//! ```
//!
//! Rows are placed by the UTC date of their event time (dead letters by their Kafka
//! timestamp, or the ingestion time when the message has none). A file's name is a function
//! of the batch's Kafka range alone, so replaying the same range after a crash produces the
//! same keys. Offsets are zero-padded to 20 digits so that names sort in offset order.
//!
//! A manifest lists the objects of one batch, in a folder named for the UTC date the batch
//! was written. Event dates can be anything (late events, replays of 2019 data), but batches
//! are written in time order, so a reader finds new files by listing only the manifest
//! folders of recent days.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use object_store::path::Path;

/// Prefix of payment-event files under the root.
pub const TRANSACTIONS_PREFIX: &str = "bronze/transactions";
/// Prefix of dead-letter files under the root.
pub const DEAD_LETTER_PREFIX: &str = "dead_letter/transactions";
/// Prefix of the streamer's per-partition batch records under the root.
pub const STREAMER_STATE_PREFIX: &str = "_streamer";

/// Prefix of the manifests of written batches under the root.
pub const MANIFEST_PREFIX: &str = "_manifests";

/// The Kafka range one batch of one partition covers, both ends inclusive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct BatchRange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Offset of the first message in the batch.
    pub first_offset: i64,
    /// Offset of the last message in the batch.
    pub last_offset: i64,
}

impl BatchRange {
    /// The file name every object of this batch carries.
    pub fn file_name(&self) -> String {
        format!(
            "{}-p{:05}-o{:020}-{:020}.parquet",
            self.topic, self.partition, self.first_offset, self.last_offset
        )
    }

    /// Parses a name made by [`Self::file_name`].
    pub fn parse_file_name(name: &str) -> Option<Self> {
        let stem = name.strip_suffix(".parquet")?;
        // Split from the right: the topic itself may contain '-'.
        let (rest, last) = stem.rsplit_once('-')?;
        let (rest, first) = rest.rsplit_once("-o")?;
        let (topic, partition) = rest.rsplit_once("-p")?;
        Some(Self {
            topic: topic.to_owned(),
            partition: partition.parse().ok()?,
            first_offset: first.parse().ok()?,
            last_offset: last.parse().ok()?,
        })
    }
}

/// The folder of one UTC day under `prefix`.
pub fn date_folder(root: &Path, prefix: &str, date: NaiveDate) -> Path {
    let folder = format!(
        "{prefix}/year={:04}/month={:02}/day={:02}",
        date.year(),
        date.month(),
        date.day()
    );
    join(root, &folder)
}

/// The key of a payment-event file for `range` holding rows of `date`.
pub fn transactions_file(root: &Path, date: NaiveDate, range: &BatchRange) -> Path {
    join(
        &date_folder(root, TRANSACTIONS_PREFIX, date),
        &range.file_name(),
    )
}

/// The key of a dead-letter file for `range` holding records of `date`.
pub fn dead_letter_file(root: &Path, date: NaiveDate, range: &BatchRange) -> Path {
    join(
        &date_folder(root, DEAD_LETTER_PREFIX, date),
        &range.file_name(),
    )
}

/// The key of a payment-event file holding `count` dead letters of `range` that decode now,
/// redriven into the rows of `date`. A batch spanning midnight leaves dead-letter files of one
/// name in two day folders, so the name carries the dead letters' day (`dead_on`) too; the
/// count is in it so that a later fix, which redrives more of the same dead letters, writes a
/// new file instead of meeting the old one.
pub fn redriven_file(
    root: &Path,
    date: NaiveDate,
    range: &BatchRange,
    dead_on: NaiveDate,
    count: usize,
) -> Path {
    join(
        &date_folder(root, TRANSACTIONS_PREFIX, date),
        &redriven_name(range, dead_on, count, "parquet"),
    )
}

/// The key of the manifest announcing the files of one redrive of the dead letters of `range`
/// from `dead_on`, written on `date`.
pub fn redriven_manifest(
    root: &Path,
    date: NaiveDate,
    range: &BatchRange,
    dead_on: NaiveDate,
    count: usize,
) -> Path {
    join(
        &manifest_folder(root, &range.topic, date),
        &redriven_name(range, dead_on, count, "json"),
    )
}

fn redriven_name(range: &BatchRange, dead_on: NaiveDate, count: usize, extension: &str) -> String {
    let name = range.file_name();
    let stem = name.strip_suffix(".parquet").unwrap_or(&name);
    format!(
        "{stem}.redriven-{}-{count}.{extension}",
        dead_on.format("%Y%m%d")
    )
}

/// The key of the record of the last batch written for a partition.
pub fn batch_record(root: &Path, topic: &str, partition: i32) -> Path {
    join(
        root,
        &format!("{STREAMER_STATE_PREFIX}/{topic}/partition={partition}.json"),
    )
}

/// The folder holding the manifest folders of `topic`, one per day.
pub fn manifests_root(root: &Path, topic: &str) -> Path {
    join(root, &format!("{MANIFEST_PREFIX}/{topic}"))
}

/// The folder of the manifests of `topic` written on `date`.
pub fn manifest_folder(root: &Path, topic: &str, date: NaiveDate) -> Path {
    join(&manifests_root(root, topic), &format!("date={date}"))
}

/// The folder holding every payment-event file.
pub fn transactions_root(root: &Path) -> Path {
    join(root, TRANSACTIONS_PREFIX)
}

/// The key of the manifest of `range`, written on `date`.
pub fn manifest(root: &Path, date: NaiveDate, range: &BatchRange) -> Path {
    let name = range.file_name().replace(".parquet", ".json");
    join(&manifest_folder(root, &range.topic, date), &name)
}

/// Parses the date out of a manifest folder name such as `date=2026-11-02`.
pub fn manifest_folder_date(name: &str) -> Option<NaiveDate> {
    name.strip_prefix("date=")?.parse().ok()
}

/// The UTC date of a time.
pub fn utc_date(time: DateTime<Utc>) -> NaiveDate {
    time.date_naive()
}

/// Parses `year=YYYY/month=MM/day=DD` out of a key, for readers of the layout.
pub fn date_of_key(key: &Path) -> Option<NaiveDate> {
    let mut year = None;
    let mut month = None;
    let mut day = None;
    for part in key.parts() {
        let part = part.as_ref();
        if let Some(v) = part.strip_prefix("year=") {
            year = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("month=") {
            month = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("day=") {
            day = v.parse().ok();
        }
    }
    NaiveDate::from_ymd_opt(year?, month?, day?)
}

/// `base` joined with a relative key of `/`-separated parts.
pub(crate) fn join(base: &Path, relative: &str) -> Path {
    relative
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(base.clone(), |path, part| path.join(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> BatchRange {
        BatchRange {
            topic: "pay-ments".to_owned(),
            partition: 2,
            first_offset: 100,
            last_offset: 2_599,
        }
    }

    #[test]
    fn file_names_are_deterministic_sortable_and_parse_back() {
        let name = range().file_name();
        assert_eq!(
            name,
            "pay-ments-p00002-o00000000000000000100-00000000000000002599.parquet"
        );
        assert_eq!(BatchRange::parse_file_name(&name), Some(range()));
        let later = BatchRange {
            first_offset: 2_600,
            last_offset: 10_000,
            ..range()
        };
        assert!(later.file_name() > name);
        assert_eq!(BatchRange::parse_file_name("other.parquet"), None);
    }

    #[test]
    fn partition_paths_follow_the_event_date() {
        let root = Path::from("lake/prod");
        let date = NaiveDate::from_ymd_opt(2026, 3, 7).unwrap();
        let key = transactions_file(&root, date, &range());
        assert_eq!(
            key.as_ref(),
            "lake/prod/bronze/transactions/year=2026/month=03/day=07/\
             pay-ments-p00002-o00000000000000000100-00000000000000002599.parquet"
        );
        assert_eq!(date_of_key(&key), Some(date));
        let dead = dead_letter_file(&Path::default(), date, &range());
        assert!(
            dead.as_ref()
                .starts_with("dead_letter/transactions/year=2026/month=03/day=07/")
        );
        assert_eq!(
            manifest(&root, date, &range()).as_ref(),
            "lake/prod/_manifests/pay-ments/date=2026-03-07/\
             pay-ments-p00002-o00000000000000000100-00000000000000002599.json"
        );
        assert_eq!(manifest_folder_date("date=2026-03-07"), Some(date));
        assert_eq!(
            batch_record(&root, "pay-ments", 2).as_ref(),
            "lake/prod/_streamer/pay-ments/partition=2.json"
        );
    }
}
