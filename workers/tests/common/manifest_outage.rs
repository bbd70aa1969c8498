//! An object store that stops storing manifests: what a streamer killed between writing a
//! batch's objects and publishing its manifest leaves behind.

use std::fmt;
use std::sync::Arc;

use fintech_workers::bronze::layout::BatchRange;

use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Passes everything through to `inner`, except the manifests of every batch but each
/// partition's first (a manifest whose range starts after offset 0), which it refuses.
#[derive(Debug)]
pub struct ManifestOutage {
    inner: Arc<dyn ObjectStore>,
}

impl ManifestOutage {
    /// A store in front of `inner` that publishes only each partition's first batch.
    pub fn beyond_first_batch(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    fn refuses(&self, location: &Path) -> bool {
        let in_manifests = location.parts().any(|part| part.as_ref() == "_manifests");
        let range = location
            .filename()
            .and_then(|name| name.strip_suffix(".json"))
            .and_then(|stem| BatchRange::parse_file_name(&format!("{stem}.parquet")));
        in_manifests && range.is_some_and(|range| range.first_offset > 0)
    }
}

impl fmt::Display for ManifestOutage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestOutage({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for ManifestOutage {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.refuses(location) {
            return Err(object_store::Error::Generic {
                store: "ManifestOutage",
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
