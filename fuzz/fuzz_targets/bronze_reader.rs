//! Any object under bronze is read by the loader's path without a panic: it is either
//! unreadable or of other columns (and set aside), or its rows are validated into silver
//! rows and rejected rows.
#![no_main]

use std::sync::Arc;

use fintech_workers::bronze::Lake;
use fintech_workers::loader::rows::{RunRows, check_columns};
use libfuzzer_sys::fuzz_target;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

fuzz_target!(|bytes: &[u8]| {
    futures::executor::block_on(async {
        let store = Arc::new(InMemory::new());
        let path = Path::from("bronze/transactions/file.parquet");
        store
            .put(&path, PutPayload::from(bytes.to_vec()))
            .await
            .unwrap();
        let lake = Lake::new(store, Path::default());
        let Ok(file) = lake.read_parquet(&path).await else {
            return;
        };
        let mut rows = RunRows::default();
        for batch in file.batches() {
            let Ok(batch) = batch else { return };
            if check_columns(path.as_ref(), &batch).is_err() {
                return;
            }
            rows.add_batch(path.as_ref(), &batch, Default::default())
                .unwrap();
        }
        let _ = rows.take_copy_data(&Default::default());
    });
});
