//! Opening the object store that holds bronze, from a URL.
//!
//! `s3://bucket/prefix` uses S3 or any S3-compatible server (MinIO): the endpoint, region and
//! credentials come from the flags or the usual `AWS_*` environment variables
//! (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP`). `file:///path` uses a local folder, created when missing.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use url::Url;

/// Where bronze lives.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct StorageOptions {
    /// Root of the lake: `s3://bucket/prefix` or `file:///path`.
    #[arg(long, env = "FINTECH_LAKE_URL", default_value = "s3://fintech/lake")]
    pub lake_url: String,

    /// S3 endpoint, for S3-compatible servers such as MinIO (default: `AWS_ENDPOINT_URL`).
    #[arg(long, env = "FINTECH_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,

    /// S3 region (default: `AWS_REGION`, else us-east-1).
    #[arg(long, env = "FINTECH_S3_REGION")]
    pub s3_region: Option<String>,
}

/// Errors opening the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL does not parse or has an unsupported scheme.
    #[error("lake URL {url:?} is not usable: {reason}; use s3://bucket/prefix or file:///path")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store could not be configured (for example missing credentials).
    #[error("cannot open the object store at {url}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        source: object_store::Error,
    },
    /// The local folder could not be created.
    #[error("cannot create the local lake folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl StorageOptions {
    /// Options for a local folder.
    pub fn local(folder: &std::path::Path) -> Result<Self, StorageError> {
        let url = Url::from_directory_path(folder).map_err(|()| StorageError::Url {
            url: folder.display().to_string(),
            reason: "not an absolute path".to_owned(),
        })?;
        Ok(Self {
            lake_url: url.to_string(),
            s3_endpoint: None,
            s3_region: None,
        })
    }

    /// The folder of a `file://` lake, `None` for any other. A local folder cannot replace an
    /// object conditionally, so the lake fences its batch records with file locks there.
    pub fn local_folder(&self) -> Option<std::path::PathBuf> {
        let url = Url::parse(&self.lake_url).ok()?;
        (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
    }

    /// Opens the store and returns it with the root path inside it.
    pub fn open(&self) -> Result<(Arc<dyn ObjectStore>, Path), StorageError> {
        let url_error = |reason: String| StorageError::Url {
            url: self.lake_url.clone(),
            reason,
        };
        let url = Url::parse(&self.lake_url).map_err(|e| url_error(e.to_string()))?;
        match url.scheme() {
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| url_error("no bucket".to_owned()))?;
                // The lake needs S3's conditional writes, `If-None-Match: *` for its create-only
                // objects and `If-Match` for the streamer's fenced batch records (AWS S3 and
                // MinIO have both), whatever `AWS_CONDITIONAL_PUT` says.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_conditional_put(S3ConditionalPut::ETagMatch);
                if let Some(endpoint) = &self.s3_endpoint {
                    builder = builder.with_endpoint(endpoint);
                    if endpoint.starts_with("http://") {
                        builder = builder.with_allow_http(true);
                    }
                }
                if let Some(region) = &self.s3_region {
                    builder = builder.with_region(region);
                }
                let store = builder.build().map_err(|source| StorageError::Open {
                    url: self.lake_url.clone(),
                    source,
                })?;
                let root = Path::from_url_path(url.path()).map_err(|e| url_error(e.to_string()))?;
                Ok((Arc::new(store), root))
            }
            "file" => {
                let folder = url
                    .to_file_path()
                    .map_err(|()| url_error("not a local path".to_owned()))?;
                std::fs::create_dir_all(&folder).map_err(|source| StorageError::Folder {
                    path: folder.display().to_string(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(&folder).map_err(|source| {
                    StorageError::Open {
                        url: self.lake_url.clone(),
                        source,
                    }
                })?;
                Ok((Arc::new(store), Path::default()))
            }
            other => Err(url_error(format!("unsupported scheme {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> StorageOptions {
        StorageOptions {
            lake_url: url.to_owned(),
            s3_endpoint: Some("http://127.0.0.1:9000".to_owned()),
            s3_region: Some("us-east-1".to_owned()),
        }
    }

    #[test]
    fn parses_s3_and_file_urls() {
        let (_, root) = options("s3://bucket/lake/prod").open().unwrap();
        assert_eq!(root.as_ref(), "lake/prod");
        let folder = tempfile::tempdir().unwrap();
        let (_, root) = StorageOptions::local(folder.path())
            .unwrap()
            .open()
            .unwrap();
        assert_eq!(root.as_ref(), "");
        let local = StorageOptions::local(folder.path()).unwrap();
        assert_eq!(local.local_folder().as_deref(), Some(folder.path()));
        assert_eq!(options("s3://bucket/lake").local_folder(), None);
    }

    #[test]
    fn unsupported_urls_say_what_to_use() {
        let error = options("ftp://host/x").open().err().unwrap().to_string();
        assert!(
            error.contains("unsupported scheme") && error.contains("s3://bucket/prefix"),
            "{error}"
        );
        let error = options("not a url").open().err().unwrap().to_string();
        assert!(error.contains("not usable"), "{error}");
    }
}
