//! Loading the bank's settlement files into silver: every new file under the batch files'
//! prefix, exactly once, its good lines into `raw.bank_settlements` and its bad ones into
//! `raw.rejected_bank_lines` with their line number and reason. The loader runs this in an
//! audited run of its own ([`crate::loader::Loader::load_bank_files`]), in one transaction
//! under the load lock, so a file is recorded in `metadata.loaded_bank_files` together with
//! its lines or not at all.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sqlx::PgConnection;
use uuid::Uuid;

use super::file::{BankLine, day_of, parse_file};
use crate::loader::QuarantineReason;
use crate::storage::{StorageError, StorageOptions};

/// Lines sent to the server in one statement.
const LINES_PER_INSERT: usize = 5_000;

/// Where the bank's files are: a store and the prefix inside it.
#[derive(Clone)]
pub struct BankFiles {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl std::fmt::Debug for BankFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankFiles").field("url", &self.url).finish()
    }
}

/// What one run of [`BankFiles::load_new`] did.
#[derive(Debug, Default)]
pub struct BankLoad {
    /// New files found.
    pub files_pending: u64,
    /// Files loaded.
    pub files_loaded: u64,
    /// Files set aside whole: path, why (`WrongSchema`: the first line is not the header;
    /// `Missing`: listed, then gone before it was read), and the error.
    pub set_aside: Vec<(String, QuarantineReason, String)>,
    /// Lines read, header and blank lines left out.
    pub lines_read: u64,
    /// Lines stored in `raw.bank_settlements`.
    pub lines_loaded: u64,
    /// Lines refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
}

/// Errors reading the files (a database error is the caller's to wrap).
#[derive(Debug, thiserror::Error)]
pub enum BankFilesError {
    /// The store could not be reached or listed.
    #[error("cannot read the bank files at {url}: {source}")]
    Store {
        /// Where.
        url: String,
        /// Why.
        source: object_store::Error,
    },
    /// A statement failed.
    #[error("database operation failed while {action}: {source}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// Why.
        source: sqlx::Error,
    },
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> BankFilesError {
    move |source| BankFilesError::Database { action, source }
}

impl BankFiles {
    /// The files under `url` (`s3://bucket/prefix` or `file:///path`), reached with the
    /// endpoint and region of `storage`.
    pub fn open(url: &str, storage: &StorageOptions) -> Result<Self, StorageError> {
        Self::at(&StorageOptions {
            lake_url: url.to_owned(),
            ..storage.clone()
        })
    }

    /// The files at `options.lake_url`.
    pub fn at(options: &StorageOptions) -> Result<Self, StorageError> {
        let (store, prefix) = options.open()?;
        Ok(Self {
            store,
            prefix,
            url: options.lake_url.clone(),
        })
    }

    /// Where they are.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Writes the file for a day (replacing one of the same name) and returns its path.
    pub async fn put(&self, name: &str, text: String) -> Result<Path, BankFilesError> {
        let path = self.prefix.clone().join(name);
        self.store
            .put(&path, text.into())
            .await
            .map_err(|source| self.store_error(source))?;
        Ok(path)
    }

    /// Reads the file `name` back.
    pub async fn get(&self, name: &str) -> Result<bytes::Bytes, BankFilesError> {
        let path = self.prefix.clone().join(name);
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|source| self.store_error(source))?;
        got.bytes().await.map_err(|source| self.store_error(source))
    }

    fn store_error(&self, source: object_store::Error) -> BankFilesError {
        BankFilesError::Store {
            url: self.url.clone(),
            source,
        }
    }

    /// Loads every settlement file not loaded or set aside yet, in `tx` (which holds the
    /// load lock), recording each under run `run_id`.
    pub async fn load_new(
        &self,
        tx: &mut PgConnection,
        run_id: Uuid,
    ) -> Result<BankLoad, BankFilesError> {
        let listed: Vec<(Path, chrono::NaiveDate)> = self
            .store
            .list(Some(&self.prefix))
            .map_ok(|meta| meta.location)
            .try_collect::<Vec<Path>>()
            .await
            .map_err(|source| self.store_error(source))?
            .into_iter()
            .filter_map(|path| day_of(path.as_ref()).map(|day| (path, day)))
            .collect();
        let names: Vec<String> = listed.iter().map(|(p, _)| p.to_string()).collect();
        let done: HashSet<String> = sqlx::query_scalar(
            "select path from metadata.loaded_bank_files where path = any($1) \
             union all select path from metadata.quarantined_files where path = any($1)",
        )
        .bind(&names)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("reading the bank files loaded already"))?
        .into_iter()
        .collect();
        let mut pending: Vec<(Path, chrono::NaiveDate)> = listed
            .into_iter()
            .filter(|(path, _)| !done.contains(path.as_ref()))
            .collect();
        pending.sort_by(|a, b| (a.1, a.0.as_ref()).cmp(&(b.1, b.0.as_ref())));

        let mut load = BankLoad {
            files_pending: pending.len() as u64,
            ..BankLoad::default()
        };
        for (path, day) in pending {
            let got = match self.store.get(&path).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => {
                    load.set_aside.push((
                        path.to_string(),
                        QuarantineReason::Missing,
                        "listed but gone before it was read".to_owned(),
                    ));
                    continue;
                }
                Err(source) => return Err(self.store_error(source)),
            };
            let (size, etag) = (got.meta.size, got.meta.e_tag.clone());
            let bytes = got
                .bytes()
                .await
                .map_err(|source| self.store_error(source))?;
            let parsed = match parse_file(&bytes) {
                Ok(parsed) => parsed,
                Err(error) => {
                    load.set_aside.push((
                        path.to_string(),
                        QuarantineReason::WrongSchema,
                        error.to_string(),
                    ));
                    continue;
                }
            };
            let file = path.to_string();
            load.lines_read += (parsed.lines.len() + parsed.rejected.len()) as u64;
            for chunk in parsed.lines.chunks(LINES_PER_INSERT) {
                load.lines_loaded += insert_lines(tx, &file, day, chunk, run_id).await?;
            }
            for (_, _, error) in &parsed.rejected {
                *load.rejected.entry(error.reason.as_str()).or_default() += 1;
            }
            insert_rejected(tx, &file, &parsed.rejected, run_id).await?;
            sqlx::query(
                "insert into metadata.loaded_bank_files \
                 (path, settlement_date, size_bytes, etag, lines_loaded, lines_rejected, run_id) \
                 values ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&file)
            .bind(day)
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .bind(etag)
            .bind(i64::try_from(parsed.lines.len()).unwrap_or(i64::MAX))
            .bind(i64::try_from(parsed.rejected.len()).unwrap_or(i64::MAX))
            .bind(run_id)
            .execute(&mut *tx)
            .await
            .map_err(db("recording a loaded bank file"))?;
            load.files_loaded += 1;
        }
        Ok(load)
    }
}

async fn insert_lines(
    tx: &mut PgConnection,
    file: &str,
    day: chrono::NaiveDate,
    lines: &[(i32, BankLine)],
    run_id: Uuid,
) -> Result<u64, BankFilesError> {
    let inserted = sqlx::query(
        "insert into raw.bank_settlements (bank_file, settlement_date, line_number, transaction_id, \
         amount, currency, status, settled_at, bank_reference, load_run_id) \
         select $1, $2, n, t, a, c, s, at, r, $10 \
         from unnest($3::int[], $4::text[], $5::numeric[], $6::text[], $7::text[], \
                     $8::timestamptz[], $9::text[]) as u(n, t, a, c, s, at, r)",
    )
    .bind(file)
    .bind(day)
    .bind(lines.iter().map(|(n, _)| *n).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.transaction_id.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.amount).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.currency.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.status.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.settled_at).collect::<Vec<_>>())
    .bind(lines.iter().map(|(_, l)| l.bank_reference.as_str()).collect::<Vec<_>>())
    .bind(run_id)
    .execute(&mut *tx)
    .await
    .map_err(db("inserting bank settlement lines"))?;
    Ok(inserted.rows_affected())
}

async fn insert_rejected(
    tx: &mut PgConnection,
    file: &str,
    rejected: &[(i32, String, super::file::LineError)],
    run_id: Uuid,
) -> Result<(), BankFilesError> {
    if rejected.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into raw.rejected_bank_lines (bank_file, line_number, line, reason, error, load_run_id) \
         select $1, n, l, r, e, $5 from unnest($2::int[], $3::text[], $4::text[], $6::text[]) \
             as u(n, l, r, e)",
    )
    .bind(file)
    .bind(rejected.iter().map(|(n, _, _)| *n).collect::<Vec<_>>())
    .bind(rejected.iter().map(|(_, l, _)| l.as_str()).collect::<Vec<_>>())
    .bind(rejected.iter().map(|(_, _, e)| e.reason.as_str()).collect::<Vec<_>>())
    .bind(run_id)
    .bind(rejected.iter().map(|(_, _, e)| e.detail.as_str()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await
    .map_err(db("inserting rejected bank lines"))?;
    Ok(())
}
