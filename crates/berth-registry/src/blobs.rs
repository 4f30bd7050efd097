//! Reading, mounting and deleting blobs of a repository.

use crate::{Registry, RegistryError, Result};
use berth_spec::range::ByteRange;
use berth_spec::{Digest, RepoName};
use berth_storage::{layout, ObjectBody, StorageError};
use bytes::Bytes;
use std::ops::Range;

/// A blob (or a range of it) ready to send.
pub struct BlobContent {
    /// The size of the whole blob.
    pub size: u64,
    /// The part being sent: the whole blob unless a range was asked for.
    pub range: Range<u64>,
    /// `None` for HEAD-style lookups that do not need the bytes.
    pub body: Option<ObjectBody>,
    /// Fetch the blob from this URL instead (a mirror that redirects to its
    /// upstream); `size`, `range` and `body` are then empty.
    pub redirect: Option<String>,
}

impl Registry {
    /// True when `digest` may be read from `name`: pushed or mounted there as
    /// a blob, or stored there as a manifest (distribution serves both).
    pub(crate) async fn blob_linked(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        for key in [
            layout::layer_link(name, digest),
            layout::manifest_revision_link(name, digest),
        ] {
            match self.backend.head(&key).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Looks a blob up and, unless `head_only`, opens the requested range of it.
    pub async fn get_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
        head_only: bool,
    ) -> Result<BlobContent> {
        if let Some(source) = self.source_for(name) {
            let mut content = source.blob(name, digest, range).await?;
            if head_only {
                content.body = None;
            }
            return Ok(content);
        }
        if let Some(a) = self.augmented_for_read(name).await? {
            return self.augmented_blob(&a, digest, range, head_only).await;
        }
        if let Some(p) = self.proxied_for_read(name).await? {
            return self.proxied_blob(&p, digest, range, head_only).await;
        }
        self.local_blob(name, digest, range, head_only).await
    }

    /// A blob of a repository in storage (pushed, mounted, or cached from an upstream).
    pub(crate) async fn local_blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
        head_only: bool,
    ) -> Result<BlobContent> {
        // Being deleted by the garbage collector: unknown already, so that a
        // pusher checking for it uploads it again.
        if self.gate.is_deleting(digest) || !self.blob_linked(name, digest).await? {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        let key = layout::blob_data(digest);
        let size = match self.backend.head(&key).await {
            Ok(meta) => meta.size,
            // Linked but gone: deleted by garbage collection, or a half-copied directory.
            Err(e) if e.is_not_found() => return Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => return Err(e.into()),
        };
        let range = match range {
            None => 0..size,
            Some(r) => r.resolve(size).ok_or(RegistryError::RangeNotSatisfiable { size })?,
        };
        if let (false, Some(expires_in)) = (head_only, self.config.blob_redirect) {
            // The client fetches the bytes (and its Range) from the store
            // itself: they never pass through this process.
            if let Some(url) = self.backend.presigned_get(&key, expires_in).await? {
                return Ok(BlobContent {
                    size,
                    range,
                    body: None,
                    redirect: Some(url),
                });
            }
        }
        let body = if head_only {
            None
        } else {
            match self.backend.open(&key, Some(range.clone())).await {
                Ok(body) => Some(body),
                Err(StorageError::NotFound(_)) => return Err(RegistryError::BlobUnknown(digest.clone())),
                Err(StorageError::RangeNotSatisfiable { size, .. }) => {
                    return Err(RegistryError::RangeNotSatisfiable { size })
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(BlobContent {
            size,
            range,
            body,
            redirect: None,
        })
    }

    /// Makes a blob readable from `name` without copying it: from repository
    /// `from`, or, with `from` absent (the spec lets `from` be optional), from
    /// the blob store wherever the blob was pushed. Returns false when the blob
    /// cannot be mounted (the client then uploads it as usual). Whether the
    /// caller may read the source is the caller's decision, made before this.
    pub async fn mount_blob(&self, name: &RepoName, from: Option<&RepoName>, digest: &Digest) -> Result<bool> {
        self.ensure_writable(name)?;
        let pins = self.pin_references([digest]).await?;
        if let Some(from) = from {
            if self.source_for(from).is_some() || !self.blob_linked(from, digest).await? {
                return Ok(false);
            }
        }
        match self.backend.head(&layout::blob_data(digest)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        pins.confirm()?;
        self.link_blob(name, digest).await?;
        Ok(true)
    }

    /// Makes `digest` readable from `name`. A link already there is kept:
    /// links are written atomically, so one that exists is whole.
    pub(crate) async fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        let key = layout::layer_link(name, digest);
        match self.backend.head(&key).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.backend
            .put(&key, Bytes::from(layout::link_content(digest)))
            .await?;
        Ok(())
    }

    /// Unlinks a blob from a repository. The bytes stay until garbage
    /// collection, since other repositories may share them.
    pub async fn delete_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        self.ensure_deletable(name)?;
        let key = layout::layer_link(name, digest);
        match self.backend.head(&key).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Err(RegistryError::BlobUnknown(digest.clone())),
            Err(e) => return Err(e.into()),
        }
        self.backend.delete(&key).await?;
        Ok(())
    }
}
