//! An object store that stops storing: what a streamer killed or stopped at some write
//! leaves behind. It refuses either the manifests of every batch but each partition's first
//! (killed between a batch's objects and its manifests), or every put from the n-th on
//! (killed at any write: a batch record, an object or a manifest); or it holds every batch
//! record write until it is let through (a streamer stopped mid-batch, a zombie to be).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use fintech_workers::bronze::layout::BatchRange;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Which puts an outage refuses.
#[derive(Debug)]
enum Refuse {
    /// Manifests of a range that starts after offset 0.
    ManifestsBeyondFirstBatch,
    /// Every put from the `first`-th on (1-based), counting puts in `seen`.
    PutsFrom { first: usize, seen: AtomicUsize },
    /// Nothing, but batch records (under `_streamer/`) wait until `open` turns true; `held`
    /// counts the writes that reached the gate.
    HoldRecords {
        open: tokio::sync::watch::Receiver<bool>,
        held: Arc<AtomicUsize>,
    },
    /// No put, but every read of a bronze object while `down` is set: the store unreachable
    /// for a loader.
    BronzeReadsWhile {
        down: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// Passes everything through to `inner` except the puts its rule refuses.
#[derive(Debug)]
pub struct StoreOutage {
    inner: Arc<dyn ObjectStore>,
    refuse: Refuse,
}

impl StoreOutage {
    /// A store in front of `inner` that publishes only each partition's first batch.
    pub fn beyond_first_batch(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            refuse: Refuse::ManifestsBeyondFirstBatch,
        }
    }

    /// A store in front of `inner` that refuses its `first`-th put (1-based) and every put
    /// after it.
    pub fn from_put(inner: Arc<dyn ObjectStore>, first: usize) -> Self {
        Self {
            inner,
            refuse: Refuse::PutsFrom {
                first,
                seen: AtomicUsize::new(0),
            },
        }
    }

    /// A store in front of `inner` that holds every batch record write until `open` turns
    /// true; `held` counts the writes that reached it.
    pub fn holding_batch_records(
        inner: Arc<dyn ObjectStore>,
        open: tokio::sync::watch::Receiver<bool>,
        held: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            inner,
            refuse: Refuse::HoldRecords { open, held },
        }
    }

    /// A store in front of `inner` whose bronze objects cannot be read while `down` is set.
    pub fn bronze_reads_while(
        inner: Arc<dyn ObjectStore>,
        down: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            inner,
            refuse: Refuse::BronzeReadsWhile { down },
        }
    }

    /// Puts seen so far (for [`StoreOutage::from_put`]).
    pub fn puts(&self) -> usize {
        match &self.refuse {
            Refuse::PutsFrom { seen, .. } => seen.load(Ordering::SeqCst),
            _ => 0,
        }
    }

    fn refuses(&self, location: &Path) -> bool {
        match &self.refuse {
            Refuse::ManifestsBeyondFirstBatch => {
                let in_manifests = location.parts().any(|part| part.as_ref() == "_manifests");
                let range = location
                    .filename()
                    .and_then(|name| name.strip_suffix(".json"))
                    .and_then(|stem| BatchRange::parse_file_name(&format!("{stem}.parquet")));
                in_manifests && range.is_some_and(|range| range.first_offset > 0)
            }
            Refuse::PutsFrom { first, seen } => seen.fetch_add(1, Ordering::SeqCst) + 1 >= *first,
            Refuse::HoldRecords { .. } | Refuse::BronzeReadsWhile { .. } => false,
        }
    }

    /// Waits at the gate when this is a held batch record write.
    async fn hold(&self, location: &Path) {
        if let Refuse::HoldRecords { open, held } = &self.refuse
            && location.parts().any(|part| part.as_ref() == "_streamer")
        {
            held.fetch_add(1, Ordering::SeqCst);
            let mut open = open.clone();
            let _ = open.wait_for(|open| *open).await;
        }
    }
}

impl fmt::Display for StoreOutage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreOutage({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for StoreOutage {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.hold(location).await;
        if self.refuses(location) {
            return Err(object_store::Error::Generic {
                store: "StoreOutage",
                source: format!("refusing to store {location}").into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Refuse::BronzeReadsWhile { down } = &self.refuse
            && down.load(Ordering::SeqCst)
            && location.parts().any(|part| part.as_ref() == "bronze")
        {
            return Err(object_store::Error::Generic {
                store: "StoreOutage",
                source: format!("connection refused reading {location}").into(),
            });
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
