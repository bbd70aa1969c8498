//! The object stores a lake runs on, for the suites that hold each of them to the same
//! guarantees (`tests/lake.rs`, `tests/fencing.rs`): the in-memory store, a local folder and
//! MinIO. [`on_every_store!`](crate::on_every_store) runs each guarantee on each.

use std::sync::Arc;

use fintech_workers::bronze::Lake;
use fintech_workers::storage::StorageOptions;
use object_store::path::Path;

/// A lake, and the folder that must outlive it when it is a local one.
pub struct TestStore {
    /// The lake.
    pub lake: Lake,
    _folder: Option<tempfile::TempDir>,
}

/// A lake in memory.
pub fn in_memory() -> TestStore {
    TestStore {
        lake: Lake::new(
            Arc::new(object_store::memory::InMemory::new()),
            Path::from("lake"),
        ),
        _folder: None,
    }
}

/// A lake in a fresh local folder.
pub fn local_folder() -> TestStore {
    let folder = tempfile::tempdir().unwrap();
    let lake = Lake::open(&StorageOptions::local(folder.path()).unwrap()).unwrap();
    TestStore {
        lake,
        _folder: Some(folder),
    }
}

/// A lake under a fresh prefix of the test environment's MinIO bucket.
pub fn minio() -> TestStore {
    TestStore {
        lake: Lake::open(&super::test_lake("lake")).unwrap(),
        _folder: None,
    }
}

/// Runs each named guarantee (an `async fn(&Lake)` of the calling file) on each store, in a
/// module per store; MinIO's need the test environment. Several threads, so that racing
/// writers really race.
#[macro_export]
macro_rules! on_every_store {
    ($($guarantee:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $guarantee() {
                    super::$guarantee(&$crate::common::stores::in_memory().lake).await;
                }
            )*
        }
        mod local_folder {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $guarantee() {
                    let store = $crate::common::stores::local_folder();
                    super::$guarantee(&store.lake).await;
                }
            )*
        }
        mod minio {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = "needs the test environment: scripts/test.sh"]
                async fn $guarantee() {
                    super::$guarantee(&$crate::common::stores::minio().lake).await;
                }
            )*
        }
    };
}
