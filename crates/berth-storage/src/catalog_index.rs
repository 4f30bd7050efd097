//! A [`Backend`] that keeps the catalog's index (one entry per repository,
//! see [`layout::catalog_index_root`]) up to date with the links written
//! through it: after a link of a repository is written, the repository's
//! entry is written too, unless this process wrote it lately.
//!
//! Used where several processes share the store (S3): there a catalog page
//! walked from the layout costs a listing per repository directory, each a
//! round trip, and with the index it is one listing from a start-after
//! cursor. Every write of a link goes through here (pushes, mounts,
//! manifests, the proxy's cache, `berth migrate` and `import` into a
//! bucket), so no caller has to remember the index. Entries of repositories
//! that lose every link (a garbage collection pass) and repositories written
//! by another program (distribution on the same bucket) are reconciled by
//! berth-registry's walk, which also writes [`layout::catalog_index_complete`].

use crate::backend::{AppendWriter, Backend, ObjectBody, ObjectMeta, Result};
use crate::layout;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an entry this process wrote is trusted to stay: a pass on
/// another replica may remove the entry of a repository it found empty, and
/// a push here after that writes it again at most this much later.
const REMEMBER: Duration = Duration::from_secs(60);

pub struct CatalogIndexed {
    inner: Arc<dyn Backend>,
    /// Repositories whose entry this process wrote since `since`.
    written: Mutex<(HashSet<String>, Instant)>,
}

impl CatalogIndexed {
    pub fn new(inner: Arc<dyn Backend>) -> CatalogIndexed {
        CatalogIndexed {
            inner,
            written: Mutex::new((HashSet::new(), Instant::now())),
        }
    }

    /// After `key` was written: the entry of its repository, if it is a link.
    async fn index(&self, key: &str) -> Result<()> {
        let Some(name) = layout::repository_of_link(key) else {
            return Ok(());
        };
        {
            let mut written = self.written.lock().unwrap();
            if written.1.elapsed() >= REMEMBER {
                *written = (HashSet::new(), Instant::now());
            }
            if written.0.contains(name) {
                return Ok(());
            }
        }
        let entry = format!("{}/{}", layout::catalog_index_root(), layout::catalog_entry(name));
        self.inner.put(&entry, Bytes::new()).await?;
        self.written.lock().unwrap().0.insert(name.to_owned());
        Ok(())
    }
}

#[async_trait]
impl Backend for CatalogIndexed {
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.inner.get(key).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        self.inner.open(key, range).await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put(key, data).await?;
        self.index(key).await
    }

    async fn put_ephemeral(&self, key: &str, data: Bytes) -> Result<()> {
        self.inner.put_ephemeral(key, data).await?;
        self.index(key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let created = self.inner.put_if_absent(key, data).await?;
        self.index(key).await?;
        Ok(created)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.inner.delete_prefix(prefix).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.list_keys_after(prefix, start_after, limit).await
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>> {
        self.inner.append(key, offset).await
    }

    async fn promote(&self, from: &str, to: &str) -> Result<()> {
        self.inner.promote(from, to).await?;
        self.index(to).await
    }

    async fn abort_stale_multipart_uploads(&self, older_than: Duration) -> Result<usize> {
        self.inner.abort_stale_multipart_uploads(older_than).await
    }

    async fn presigned_get(&self, key: &str, expires_in: Duration) -> Result<Option<String>> {
        self.inner.presigned_get(key, expires_in).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsBackend;

    #[tokio::test]
    async fn a_link_write_indexes_its_repository_once() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Backend> = Arc::new(FsBackend::new(dir.path()));
        let indexed = CatalogIndexed::new(fs.clone());
        let root = layout::repositories_root();
        let hex = "a".repeat(64);
        indexed
            .put(&format!("{root}/team/app/_layers/sha256/{hex}/link"), Bytes::from("x"))
            .await
            .unwrap();
        indexed
            .put(&format!("{root}/team/app/_uploads/u/startedat"), Bytes::from("x"))
            .await
            .unwrap();
        indexed.put("berth/v1/gc/lease", Bytes::from("x")).await.unwrap();
        let entries = fs
            .list_keys_after(&layout::catalog_index_root(), None, 10)
            .await
            .unwrap();
        assert_eq!(entries, [layout::catalog_entry("team/app")]);
        // Remembered: a second link writes no entry (removed here to see it).
        fs.delete(&format!("{}/{}", layout::catalog_index_root(), entries[0]))
            .await
            .unwrap();
        indexed
            .put(
                &format!("{root}/team/app/_manifests/revisions/sha256/{hex}/link"),
                Bytes::from("x"),
            )
            .await
            .unwrap();
        assert!(fs
            .list_keys_after(&layout::catalog_index_root(), None, 10)
            .await
            .unwrap()
            .is_empty());
    }
}
