//! Replay of the Kaggle credit-card transactions export (`fraudTrain.csv`).
//!
//! The file is read row by row, never whole (the training file is ~350 MB), from a local path
//! or from the object store (`s3://bucket/key`, streamed a few chunks ahead). Its header is
//! checked once at open, so a wrong file fails at start with a message that says what was
//! expected; a malformed row later in the file is reported with its line number and skipped.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, sync_channel};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::ObjectStoreExt;

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;

use crate::event::{self, Currency, EventSource, PaymentEvent, PaymentMethod, PaymentStatus};
use crate::storage::StorageOptions;

/// The columns of the export after its leading unnamed index column, in order.
pub const COLUMNS: [&str; 22] = [
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "first",
    "last",
    "gender",
    "street",
    "city",
    "state",
    "zip",
    "lat",
    "long",
    "city_pop",
    "job",
    "dob",
    "trans_num",
    "unix_time",
    "merch_lat",
    "merch_long",
    "is_fraud",
];

/// Prefix the export puts in front of every merchant name.
const MERCHANT_PREFIX: &str = "fraud_";

/// Errors that stop the replay as a whole.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened.
    #[error("cannot open Kaggle file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The first line is not the export's header.
    #[error(
        "{path} is not a Kaggle fraudTrain.csv export: expected the header \
         \",{expected}\", found {found:?}"
    )]
    Header {
        /// The file.
        path: PathBuf,
        /// The expected column names.
        expected: String,
        /// What the first line holds.
        found: String,
    },
    /// The object could not be read from the object store.
    #[error("cannot read Kaggle file {url} from the object store: {reason}")]
    Object {
        /// The object's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Reading failed part-way (an I/O error, not a malformed row).
    #[error("reading Kaggle file {path} failed: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
}

/// A row that cannot be replayed; the replay reports it and goes on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong with the row.
    pub reason: String,
}

/// One parsed row of the export, holding what the payment event needs.
#[derive(Debug, Clone, PartialEq)]
pub struct KaggleRow {
    /// `trans_date_trans_time`, taken as UTC.
    pub transaction_time: DateTime<Utc>,
    /// `cc_num`.
    pub card_number: String,
    /// `merchant` without its `fraud_` prefix.
    pub merchant_name: String,
    /// `category`.
    pub category: String,
    /// `amt`, US dollars.
    pub amount_usd: Decimal,
    /// `city`.
    pub city: String,
    /// `state`.
    pub state: String,
    /// `lat`.
    pub latitude: f64,
    /// `long`.
    pub longitude: f64,
    /// `trans_num`.
    pub transaction_number: String,
    /// `is_fraud`.
    pub is_fraud: bool,
}

/// Where an export is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KaggleLocation {
    /// A local file, or one on a mounted volume.
    File(PathBuf),
    /// An object, streamed from the object store: the options' URL is the object's,
    /// `s3://bucket/key`, with the store's endpoint and region.
    Object(StorageOptions),
}

/// Chunks of an object read ahead of the CSV reader: a few hundred kilobytes at most.
const CHUNKS_AHEAD: usize = 8;

impl KaggleLocation {
    /// `s3://bucket/key` is an object of the store at `s3_endpoint` and `s3_region`
    /// (credentials from the usual `AWS_*` variables); anything else is a local path.
    pub fn parse(location: &str, s3_endpoint: Option<String>, s3_region: Option<String>) -> Self {
        if location.starts_with("s3://") {
            Self::Object(StorageOptions {
                lake_url: location.to_owned(),
                s3_endpoint,
                s3_region,
            })
        } else {
            Self::File(PathBuf::from(location))
        }
    }

    /// Opens the export and checks its header.
    pub fn open(&self) -> Result<KaggleReader<Box<dyn Read + Send>>, OpenError> {
        match self {
            Self::File(path) => {
                let file = File::open(path).map_err(|source| OpenError::Open {
                    path: path.clone(),
                    source,
                })?;
                KaggleReader::new(path, Box::new(file))
            }
            Self::Object(storage) => {
                let url = storage.lake_url.clone();
                let object = ObjectReader::open(storage).map_err(|reason| OpenError::Object {
                    url: url.clone(),
                    reason,
                })?;
                KaggleReader::new(Path::new(&url), Box::new(object))
            }
        }
    }
}

/// An object of the store as a blocking [`Read`], for the synchronous CSV reader: a thread
/// of its own streams the object and hands over its chunks through a bounded channel, so the
/// object is never held whole.
struct ObjectReader {
    chunks: Receiver<Result<Bytes, String>>,
    current: Bytes,
}

impl ObjectReader {
    /// Starts streaming the object `storage.lake_url`; fails at once when it cannot be read
    /// (no such bucket or key, no access).
    fn open(storage: &StorageOptions) -> Result<Self, String> {
        let (store, path) = storage.open().map_err(|e| e.to_string())?;
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let (chunks_tx, chunks) = sync_channel(CHUNKS_AHEAD);
        std::thread::Builder::new()
            .name("kaggle-object".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut stream = match store.get(&path).await {
                        Ok(result) => {
                            let _ = opened_tx.send(Ok(()));
                            result.into_stream()
                        }
                        Err(error) => {
                            let _ = opened_tx.send(Err(error.to_string()));
                            return;
                        }
                    };
                    while let Some(chunk) = stream.next().await {
                        // The reader went away: stop reading.
                        if chunks_tx.send(chunk.map_err(|e| e.to_string())).is_err() {
                            return;
                        }
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        opened
            .recv()
            .map_err(|_| "the reading thread stopped".to_owned())??;
        Ok(Self {
            chunks,
            current: Bytes::new(),
        })
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(reason)) => return Err(std::io::Error::other(reason)),
                // The stream ended.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Streams the rows of one export file.
pub struct KaggleReader<R: Read> {
    path: PathBuf,
    reader: csv::Reader<R>,
    record: csv::StringRecord,
}

impl KaggleReader<File> {
    /// Opens `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let file = File::open(path).map_err(|source| OpenError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::new(path, file)
    }
}

impl<R: Read> KaggleReader<R> {
    /// Wraps `input` (named `path` in messages) and checks its header.
    pub fn new(path: &Path, input: R) -> Result<Self, OpenError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            // Rows with the wrong number of fields are reported by us, with their line.
            .flexible(true)
            .from_reader(input);
        let path = path.to_owned();
        let header = reader
            .headers()
            .map_err(|source| OpenError::Read {
                path: path.clone(),
                source,
            })?
            .clone();
        let index_column_ok = header.get(0).is_some_and(|name| name.is_empty());
        let columns_ok = header.len() == COLUMNS.len() + 1
            && header.iter().skip(1).zip(COLUMNS).all(|(a, b)| a == b);
        if !index_column_ok || !columns_ok {
            return Err(OpenError::Header {
                path,
                expected: COLUMNS.join(","),
                found: header.iter().collect::<Vec<_>>().join(","),
            });
        }
        Ok(Self {
            path,
            reader,
            record: csv::StringRecord::new(),
        })
    }

    /// Reads the next row. `Ok(None)` at the end of the file, `Ok(Some(Err(_)))` for a row
    /// to skip, `Err(_)` when the file itself cannot be read any further.
    pub fn next_row(&mut self) -> Result<Option<Result<KaggleRow, RowError>>, OpenError> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => Ok(None),
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                Ok(Some(parse_record(&self.record, line)))
            }
            Err(error) => match error.kind() {
                csv::ErrorKind::Io(_) => Err(OpenError::Read {
                    path: self.path.clone(),
                    source: error,
                }),
                _ => {
                    let line = error.position().map_or(0, |p| p.line());
                    Ok(Some(Err(RowError {
                        line,
                        reason: error.to_string(),
                    })))
                }
            },
        }
    }
}

fn parse_record(record: &csv::StringRecord, line: u64) -> Result<KaggleRow, RowError> {
    let fail = |reason: String| RowError { line, reason };
    if record.len() != COLUMNS.len() + 1 {
        return Err(fail(format!(
            "expected {} fields, found {}",
            COLUMNS.len() + 1,
            record.len()
        )));
    }
    // Field 0 is the unnamed index; the named columns start at 1.
    let field = |name: &str| -> &str {
        let position = COLUMNS.iter().position(|c| *c == name).unwrap_or(0);
        record.get(position + 1).unwrap_or("")
    };
    let required = |name: &str| -> Result<&str, RowError> {
        let value = field(name).trim();
        if value.is_empty() {
            Err(fail(format!("{name} is empty")))
        } else {
            Ok(value)
        }
    };
    let time_text = required("trans_date_trans_time")?;
    let transaction_time = NaiveDateTime::parse_from_str(time_text, "%Y-%m-%d %H:%M:%S")
        .map_err(|e| fail(format!("trans_date_trans_time {time_text:?}: {e}")))?
        .and_utc();
    let amount_usd =
        event::amount::parse(required("amt")?).map_err(|e| fail(format!("amt: {e}")))?;
    let float = |name: &str| -> Result<f64, RowError> {
        let text = required(name)?;
        text.parse()
            .map_err(|_| fail(format!("{name} {text:?} is not a number")))
    };
    let is_fraud = match required("is_fraud")? {
        "0" => false,
        "1" => true,
        other => return Err(fail(format!("is_fraud {other:?} is neither 0 nor 1"))),
    };
    let merchant = required("merchant")?;
    Ok(KaggleRow {
        transaction_time,
        card_number: required("cc_num")?.to_owned(),
        merchant_name: merchant
            .strip_prefix(MERCHANT_PREFIX)
            .unwrap_or(merchant)
            .to_owned(),
        category: required("category")?.to_owned(),
        amount_usd,
        city: required("city")?.to_owned(),
        state: required("state")?.to_owned(),
        latitude: float("lat")?,
        longitude: float("long")?,
        transaction_number: required("trans_num")?.to_owned(),
        is_fraud,
    })
}

impl KaggleRow {
    /// The payment event for this row: a card payment in US dollars, settled unless the
    /// settlement lifecycle makes it pending first.
    pub fn into_event(self, event_id: uuid::Uuid, event_time: DateTime<Utc>) -> PaymentEvent {
        PaymentEvent {
            schema_version: event::SCHEMA_VERSION,
            event_id,
            transaction_id: self.transaction_number,
            status: PaymentStatus::Success,
            event_time,
            customer_id: Some(self.card_number),
            merchant_id: merchant_id(&self.merchant_name),
            merchant_name: self.merchant_name,
            category: self.category,
            amount: self.amount_usd,
            currency: Currency::Usd,
            payment_method: PaymentMethod::Card,
            city: self.city,
            state: self.state,
            country: "US".to_owned(),
            latitude: Some(self.latitude),
            longitude: Some(self.longitude),
            is_fraud: self.is_fraud,
            source: EventSource::Kaggle,
        }
    }
}

/// A stable merchant id derived from the name, since the export has none:
/// `KGL-` and the name in lower case with runs of other characters turned into `-`.
pub fn merchant_id(name: &str) -> String {
    let mut id = String::with_capacity(name.len() + 4);
    id.push_str("KGL-");
    let mut dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash && id.len() > 4 {
            id.push('-');
            dash = true;
        }
    }
    while id.ends_with('-') {
        id.pop();
    }
    id
}

/// Test fixtures in the export's exact format, shared by the tests of several modules.
#[cfg(test)]
pub(crate) mod fixtures {
    /// The export's header line.
    pub const HEADER: &str = ",trans_date_trans_time,cc_num,merchant,category,amt,first,last,gender,street,city,state,zip,lat,long,city_pop,job,dob,trans_num,unix_time,merch_lat,merch_long,is_fraud";

    /// Three good rows, two with quoted fields that contain commas.
    pub const GOOD_ROWS: &str = "\
0,2019-01-01 00:00:18,2703186189652095,\"fraud_Rippin, Kub and Mann\",misc_net,4.97,Jennifer,Banks,F,561 Perry Cove,Moravian Falls,NC,28654,36.0788,-81.1781,3495,\"Psychologist, counselling\",1988-03-09,0b242abb623afc578575680df30655b9,1325376018,36.011293,-82.048315,0
1,2019-01-01 00:00:44,630423337322,\"fraud_Heller, Gutmann and Zieme\",grocery_pos,107.23,Stephanie,Gill,F,43039 Riley Greens Suite 393,Orient,WA,99160,48.8878,-118.2105,149,Special educational needs teacher,1978-06-21,1f76529f8574734946361c461b024d99,1325376044,49.159047,-118.186462,0
2,2019-01-01 00:00:51,38859492057661,fraud_Lind-Buckridge,entertainment,220.11,Edward,Sanchez,M,594 White Dale Suite 530,Malad City,ID,83252,42.1808,-112.262,4154,Nature conservation officer,1962-01-19,a1a22d70485983eac12b5b88dad1cf95,1325376051,43.150704,-112.154481,1
";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> Result<KaggleReader<&[u8]>, OpenError> {
        KaggleReader::new(Path::new("fixture.csv"), text.as_bytes())
    }

    fn quoted_fixture() -> String {
        format!("{}\n{}", fixtures::HEADER, fixtures::GOOD_ROWS)
    }

    fn all_rows(text: &str) -> Vec<Result<KaggleRow, RowError>> {
        let mut reader = reader(text).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    #[test]
    fn parses_quoted_fields_with_commas() {
        let rows = all_rows(&quoted_fixture());
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.merchant_name, "Rippin, Kub and Mann");
        assert_eq!(first.amount_usd, Decimal::new(497, 2));
        assert_eq!(first.transaction_number, "0b242abb623afc578575680df30655b9");
        assert_eq!(first.card_number, "2703186189652095");
        assert_eq!(
            first.transaction_time.to_rfc3339(),
            "2019-01-01T00:00:18+00:00"
        );
        let second = rows[1].as_ref().unwrap();
        assert_eq!(second.merchant_name, "Heller, Gutmann and Zieme");
        assert!(rows[2].as_ref().unwrap().is_fraud);
    }

    #[test]
    fn unquoted_comma_in_a_field_is_a_row_error_with_its_line() {
        // Line 2 loses the quotes around a merchant with a comma: one field too many.
        let text = quoted_fixture().replacen(
            "\"fraud_Rippin, Kub and Mann\"",
            "fraud_Rippin, Kub and Mann",
            1,
        );
        let rows = all_rows(&text);
        assert_eq!(rows.len(), 3);
        let error = rows[0].as_ref().unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error.reason.contains("expected 23 fields, found 24"),
            "{error}"
        );
        assert!(rows[1].is_ok() && rows[2].is_ok());
    }

    #[test]
    fn bad_values_are_row_errors_and_reading_goes_on() {
        let bad_amount = "9,2019-01-01 00:01:00,1,fraud_X,misc,abc,A,B,F,s,c,NC,1,1.0,2.0,3,j,1990-01-01,t9,1,1,1,0";
        let bad_time = "10,2019-13-01 00:01:00,1,fraud_X,misc,1.00,A,B,F,s,c,NC,1,1.0,2.0,3,j,1990-01-01,t10,1,1,1,0";
        let bad_fraud = "11,2019-01-01 00:01:00,1,fraud_X,misc,1.00,A,B,F,s,c,NC,1,1.0,2.0,3,j,1990-01-01,t11,1,1,1,yes";
        let text = format!(
            "{}\n{bad_amount}\n{bad_time}\n{bad_fraud}\n{}",
            fixtures::HEADER,
            quoted_fixture().lines().nth(1).unwrap()
        );
        let rows = all_rows(&text);
        let errors: Vec<_> = rows.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(errors[0].reason.contains("amt"));
        assert!(errors[1].reason.contains("trans_date_trans_time"));
        assert!(errors[2].reason.contains("is_fraud"));
        assert!(rows[3].is_ok());
    }

    #[test]
    fn wrong_header_is_a_clear_error_at_open() {
        let error = reader("a,b,c\n1,2,3\n").err().unwrap();
        let message = error.to_string();
        assert!(
            message.contains("is not a Kaggle fraudTrain.csv export"),
            "{message}"
        );
        assert!(
            message.contains("trans_date_trans_time,cc_num"),
            "{message}"
        );
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let error = KaggleReader::open(Path::new("/nonexistent/fraudTrain.csv"))
            .err()
            .unwrap();
        assert!(
            error
                .to_string()
                .contains("cannot open Kaggle file /nonexistent/fraudTrain.csv")
        );
    }

    #[test]
    fn maps_a_row_to_a_card_payment_in_dollars() {
        let row = all_rows(&quoted_fixture()).remove(1).unwrap();
        let time = row.transaction_time;
        let event = row.into_event(uuid::Uuid::from_u128(1), time);
        assert_eq!(event.transaction_id, "1f76529f8574734946361c461b024d99");
        assert_eq!(event.customer_id.as_deref(), Some("630423337322"));
        assert_eq!(event.merchant_name, "Heller, Gutmann and Zieme");
        assert_eq!(event.merchant_id, "KGL-heller-gutmann-and-zieme");
        assert_eq!(event.currency, Currency::Usd);
        assert_eq!(event.payment_method, PaymentMethod::Card);
        assert_eq!(event.source, EventSource::Kaggle);
        assert_eq!(event.country, "US");
        assert_eq!(event.amount, Decimal::new(10723, 2));
    }
}
