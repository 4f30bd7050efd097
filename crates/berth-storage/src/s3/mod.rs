//! The S3 backend: keys are objects in a bucket (Ceph RGW, SeaweedFS, AWS S3,
//! MinIO, ...), below an optional prefix, through the `object_store` crate.
//!
//! Every operation is one or a few store requests; `object_store` retries
//! throttling, 5xx and timeouts with exponential backoff and jitter
//! ([`client::retry_config`]), and what still fails after that is
//! [`StorageError::Unavailable`](crate::StorageError::Unavailable).
//!
//! Writes of whole objects (`put`) are single PUTs, atomic and durable when
//! the store acknowledges them. Staged objects (uploads in progress) are
//! described in [`staged`]: a small state object under the key and the data
//! in segment objects beside it, so any replica can continue a session.

mod client;
mod config;
mod errors;
mod multipart;
mod staged;

pub use config::{AddressingStyle, S3Config, S3UrlError};

use crate::backend::{AppendWriter, Backend, ObjectBody, ObjectMeta, Result, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use std::ops::Range;
use std::sync::Arc;

/// A bucket (and prefix) holding berth's keys.
#[derive(Clone)]
pub struct S3Backend {
    /// The S3 client itself (not a `dyn ObjectStore`): besides the object
    /// operations, berth uses what only its S3 type offers: signed URLs
    /// (`--redirect`, ListMultipartUploads) and paginated listings.
    store: Arc<AmazonS3>,
    config: Arc<S3Config>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend").field("url", &self.config.url()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("S3 storage {url}: {message}")]
    Config { url: String, message: String },
    #[error("S3 storage {url}: the bucket {bucket:?} does not exist at {endpoint}")]
    NoBucket {
        url: String,
        bucket: String,
        endpoint: String,
    },
    /// `reason` is the innermost cause, in a few words: each layer of the
    /// store's error repeats the one below, which would make a screenful.
    #[error("S3 storage {url}: cannot reach the bucket at {endpoint}: {reason}")]
    Unreachable {
        url: String,
        endpoint: String,
        reason: String,
    },
}

/// What went wrong in `e`, briefly: the innermost cause, or for an error
/// answer of the store its status and S3 error code.
fn root_cause(e: &object_store::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let text = cause.to_string();
    let Some(answer) = text.split("status code: ").nth(1) else {
        return text;
    };
    let status = answer.split(':').next().unwrap_or(answer).trim();
    match s3_error_code(answer) {
        Some(code) => format!("the store answered {status} ({code})"),
        None => format!("the store answered {status}"),
    }
}

/// The `<Code>` of an S3 error document.
fn s3_error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(&body[start..start + len])
}

/// Whether `e` says the bucket does not exist: `object_store` reports the
/// 404 of a listing as a generic error carrying S3's `NoSuchBucket`.
fn is_no_such_bucket(e: &object_store::Error) -> bool {
    if matches!(e, object_store::Error::NotFound { .. }) {
        return true;
    }
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("<Code>NoSuchBucket</Code>") {
            return true;
        }
        cause = c.source();
    }
    false
}

impl S3Backend {
    /// Builds the client and checks that the bucket answers (one listing of
    /// the prefix, retried briefly): a missing bucket, a wrong endpoint or
    /// refused credentials fail here, at startup, not on the first push.
    pub async fn connect(config: S3Config) -> Result<S3Backend, ConnectError> {
        let url = config.url();
        let config_error = |e: object_store::Error| ConnectError::Config {
            url: url.clone(),
            message: e.to_string(),
        };
        let store = client::build(&config, client::retry_config()).map_err(config_error)?;
        let probe = client::build(&config, client::probe_retry_config()).map_err(config_error)?;
        let endpoint = client::endpoint(&config);
        let root = config.prefix.as_deref().map(Path::from);
        match probe.list_with_delimiter(root.as_ref()).await {
            Ok(_) => {}
            Err(e) if is_no_such_bucket(&e) => {
                return Err(ConnectError::NoBucket {
                    url,
                    bucket: config.bucket.clone(),
                    endpoint,
                })
            }
            Err(e) => {
                return Err(ConnectError::Unreachable {
                    url,
                    endpoint,
                    reason: root_cause(&e),
                })
            }
        }
        Ok(S3Backend {
            store: Arc::new(store),
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The underlying store (for probes of what the engine supports, and
    /// tools that need an operation the `Backend` trait does not have).
    pub fn object_store(&self) -> &Arc<AmazonS3> {
        &self.store
    }

    /// The store path of `key` (below the prefix), for use with [`S3Backend::object_store`].
    pub fn store_path(&self, key: &str) -> Path {
        self.path(key)
    }

    /// The store path of `key`: below the prefix, if any.
    fn path(&self, key: &str) -> Path {
        debug_assert!(
            !key.split('/').any(|c| c == ".." || c.is_empty()),
            "unsafe storage key {key:?}"
        );
        match &self.config.prefix {
            Some(p) => Path::from(format!("{p}/{key}")),
            None => Path::from(key),
        }
    }

    /// Removes every object below `path/` (one listing, then batched deletes).
    async fn delete_below(&self, key: &str, path: &Path) -> Result<()> {
        let listed = self.store.list(Some(path)).map_ok(|meta| meta.location).boxed();
        self.store
            .delete_stream(listed)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                // Deleted meanwhile by someone else: the goal is reached.
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(errors::map(key, e)),
            })
    }

    async fn get_plain(&self, key: &str, options: GetOptions) -> Result<object_store::GetResult> {
        self.store
            .get_opts(&self.path(key), options)
            .await
            .map_err(|e| errors::map(key, e))
    }
}

fn to_meta(meta: &object_store::ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        size: meta.size,
        modified: Some(meta.last_modified.into()),
    }
}

fn stream_body(key: &str, result: object_store::GetResult, len: u64) -> ObjectBody {
    let key = key.to_owned();
    let stream = result
        .into_stream()
        .map_err(move |e| std::io::Error::other(errors::map(&key, e)))
        .boxed();
    ObjectBody::Stream { stream, len }
}

#[async_trait]
impl Backend for S3Backend {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let result = self.get_plain(key, GetOptions::default()).await?;
        result.bytes().await.map_err(|e| errors::map(key, e))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        // A HEAD that also returns the object's attributes, which tell a
        // staged object (whose data size is in its metadata) from a plain one.
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let result = self.get_plain(key, options).await?;
        let mut meta = to_meta(&result.meta);
        if let Some(size) = staged::logical_size(&result.attributes) {
            meta.size = size;
        }
        Ok(meta)
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        // S3 cannot send an empty range: ask for the whole object's metadata
        // instead and send nothing.
        let wanted = match &range {
            Some(r) if r.start >= r.end => {
                let meta = self.head(key).await?;
                if r.start > r.end || r.end > meta.size {
                    return Err(StorageError::RangeNotSatisfiable {
                        key: key.to_owned(),
                        start: r.start,
                        end: r.end,
                        size: meta.size,
                    });
                }
                let stream = futures::stream::empty().boxed();
                return Ok(ObjectBody::Stream { stream, len: 0 });
            }
            Some(r) => Some(GetRange::Bounded(r.clone())),
            None => None,
        };
        let options = GetOptions {
            range: wanted,
            ..GetOptions::default()
        };
        let result = match self.get_plain(key, options).await {
            Ok(r) => r,
            // Bytes past the end (S3 answers 416; the caller is told the
            // size), or a range of a staged object beyond its small state
            // object: read the state, which for data is the object itself.
            Err(e) if range.is_some() && !e.is_not_found() => {
                let state = staged::read_state(self, key).await?;
                return state.open(self, key, range);
            }
            Err(e) => return Err(e),
        };
        if staged::is_state(&result.attributes) {
            // An upload in progress: its data is in segments. (A ranged read
            // of it fetched part of the state object: read the whole state.)
            drop(result);
            let state = staged::read_state(self, key).await?;
            return state.open(self, key, range);
        }
        let size = result.meta.size;
        let got = result.range.clone();
        if let Some(r) = &range {
            if r.end > size {
                return Err(StorageError::RangeNotSatisfiable {
                    key: key.to_owned(),
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
        }
        Ok(stream_body(key, result, got.end - got.start))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(data))
            .await
            .map(|_| ())
            .map_err(|e| errors::map(key, e))
    }

    async fn abort_stale_multipart_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.abort_multipart_uploads_older_than(older_than).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let created = self
            .store
            .put_opts(
                &self.path(key),
                PutPayload::from_bytes(data),
                PutOptions::from(object_store::PutMode::Create),
            )
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(errors::map(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        // The segments of a staged object go with it; listing them costs a
        // round trip, made at the same time as the delete.
        let (path, segments_dir) = (self.path(key), staged::segments_dir(self, key));
        let (deleted, segments) = tokio::join!(self.store.delete(&path), self.delete_below(key, &segments_dir));
        match deleted {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(errors::map(key, e)),
        }
        segments
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let (path, segments_dir) = (self.path(prefix), staged::segments_dir(self, prefix));
        let (data, segments) = tokio::join!(
            self.delete_below(prefix, &path),
            self.delete_below(prefix, &segments_dir)
        );
        data.and(segments)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.path(prefix)))
            .await
            .map_err(|e| errors::map(prefix, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .chain(listed.objects.iter().map(|o| &o.location))
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        // A name can be both an object and a "directory" (a staged object
        // whose key is also a prefix never is, but a bucket written by hand may).
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let base = self.path(prefix);
        let strip = format!("{}/", base.as_ref());
        let s3 = &self.store;
        // One ListObjectsV2 per page of at most `limit` keys (a catalog page
        // asks for n + 1, not the 1,000 a plain listing asks for), from
        // `start-after`. Without a delimiter (Ceph RGW answers slower with
        // one); nested keys, which the flat index never has, are skipped.
        let mut names = Vec::new();
        let mut token = None;
        while names.len() < limit {
            let opts = PaginatedListOptions {
                // A later page goes on from its token alone.
                offset: token
                    .is_none()
                    .then(|| start_after.map(|s| format!("{strip}{s}")))
                    .flatten(),
                max_keys: Some((limit - names.len()).min(1000)),
                page_token: token.take(),
                ..Default::default()
            };
            let page = s3
                .list_paginated(Some(&strip), opts)
                .await
                .map_err(|e| errors::map(prefix, e))?;
            for meta in page.result.objects {
                if let Some(name) = meta.location.as_ref().strip_prefix(&strip) {
                    if !name.contains('/') && start_after.is_none_or(|s| name > s) && names.len() < limit {
                        names.push(name.to_owned());
                    }
                }
            }
            match page.page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(names)
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>> {
        Ok(Box::new(staged::S3AppendWriter::open(self.clone(), key, offset).await?))
    }

    async fn promote(&self, from: &str, to: &str) -> Result<()> {
        staged::promote(self, from, to).await
    }

    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<Option<String>> {
        // SigV4 query signing, computed locally from the credentials (those
        // of the environment are fetched once and cached by the client). The
        // URL carries no secret, only a signature valid for `expires_in`.
        let url = self
            .store
            .signed_url(object_store::signer::Method::GET, &self.path(key), expires_in)
            .await
            .map_err(|e| errors::map(key, e))?;
        Ok(Some(url.to_string()))
    }
}
