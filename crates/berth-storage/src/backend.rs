//! The backend trait. It is shaped so that an object store (S3, Ceph RGW) can
//! implement it without rename, hard links or cheap recursive listings:
//! every operation maps to one or a few object-store calls.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::io;
use std::ops::Range;

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{key}: expected an upload at offset {expected}, found {actual} bytes")]
    OffsetMismatch { key: String, expected: u64, actual: u64 },
    #[error("{key}: range {start}..{end} is outside the object's {size} bytes")]
    RangeNotSatisfiable {
        key: String,
        start: u64,
        end: u64,
        size: u64,
    },
    /// The store did not answer, or answered that it is busy or failing,
    /// even after retries: the same request may well succeed later.
    #[error("{key}: storage unavailable: {source}")]
    Unavailable {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("{key}: {source}")]
    Io {
        key: String,
        #[source]
        source: io::Error,
    },
}

impl StorageError {
    pub fn io(key: &str, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound(key.to_owned())
        } else {
            StorageError::Io {
                key: key.to_owned(),
                source,
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound(_))
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// When the object was last written, where the backend knows it.
    pub modified: Option<std::time::SystemTime>,
}

/// The bytes of (part of) an object, ready to be sent.
pub enum ObjectBody {
    /// A region of a local file. The HTTP layer may hand it to the kernel
    /// (sendfile) instead of copying it through user space.
    File { file: std::fs::File, offset: u64, len: u64 },
    /// Bytes from anywhere else (an object store's response body).
    Stream { stream: ByteStream, len: u64 },
    /// Bytes already in memory (a small blob the read cache holds).
    Bytes(Bytes),
}

impl ObjectBody {
    pub fn len(&self) -> u64 {
        match self {
            ObjectBody::File { len, .. } | ObjectBody::Stream { len, .. } => *len,
            ObjectBody::Bytes(b) => b.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as a stream of chunks of at most `chunk` bytes. A file region
    /// is read on a blocking thread, one chunk ahead of the consumer; dropping
    /// the stream stops the reading.
    pub fn into_stream(self, chunk: usize) -> ByteStream {
        use futures::StreamExt;
        use std::io::{Read, Seek, SeekFrom};
        let (mut file, offset, len) = match self {
            ObjectBody::Stream { stream, .. } => return stream,
            ObjectBody::Bytes(b) => return futures::stream::once(async move { Ok(b) }).boxed(),
            ObjectBody::File { file, offset, len } => (file, offset, len),
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut remaining = len;
            while remaining > 0 {
                let n = remaining.min(chunk.max(1) as u64) as usize;
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut buf) {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                remaining -= n as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // the consumer went away
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
    }
}

/// Appends to a staged object, such as the data of a blob upload.
#[async_trait]
pub trait AppendWriter: Send {
    /// Queues `data` for writing; the writer may batch.
    async fn write(&mut self, data: Bytes) -> Result<()>;
    /// Makes everything written durable and returns the object's new size.
    async fn finish(self: Box<Self>) -> Result<u64>;
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads a whole (small) object.
    async fn get(&self, key: &str) -> Result<Bytes>;

    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Opens an object, or the byte range `range` of it, for streaming.
    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody>;

    /// Writes a whole object atomically and durably: readers see the old
    /// bytes or the new ones, never a mix, and a crash leaves one of the two.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;

    /// Like [`Backend::put`] (atomic: old bytes or new, never a mix) but not
    /// necessarily durable: a crash may lose the write. For bookkeeping whose
    /// loss costs a client no more than a retry, such as an upload's start
    /// time. Backends without a cheaper path simply `put`.
    async fn put_ephemeral(&self, key: &str, data: Bytes) -> Result<()> {
        self.put(key, data).await
    }

    /// Writes a whole object like [`Backend::put`], but only if `key` does not
    /// exist: true when this call created it, false when it was there. For a
    /// lease that one of several processes must win. On S3 this is a PUT with
    /// `If-None-Match: *`; a store that ignores the condition overwrites and
    /// answers true, so callers must stay correct when two of them "win".
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool>;

    /// Removes an object. Removing an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Removes every object whose key starts with `prefix/`.
    async fn delete_prefix(&self, prefix: &str) -> Result<()>;

    /// Names of the immediate children of `prefix/` (objects and "directories"),
    /// unsorted. An absent prefix has no children.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Names of the objects directly in `prefix/` (not in "directories"
    /// below it) that sort after `start_after`, in byte order, at most
    /// `limit` of them. For an index kept as one object per entry, paged
    /// through in one round trip on an object store (ListObjectsV2 with
    /// `start-after`). Flat, because not every store lists nested keys in
    /// byte order (SeaweedFS 4.48 lists them depth-first).
    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Opens the staged object `key` for appending at `offset`, creating it
    /// when `offset` is 0. Fails with `OffsetMismatch` if the object does not
    /// currently hold exactly `offset` bytes (and `NotFound` if it is gone):
    /// here or, for backends that open lazily, from the writer's first
    /// `write` or `finish`, always before any byte is stored.
    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>>;

    /// Moves the staged object `from` to `to` (replacing it) and removes `from`.
    /// Filesystems rename; object stores copy then delete.
    async fn promote(&self, from: &str, to: &str) -> Result<()>;

    /// Aborts the store's multipart uploads (below this backend's keys)
    /// begun more than `older_than` ago: those a process killed mid-upload
    /// left open, whose parts the store keeps until aborted. Returns how
    /// many. Backends without multipart uploads have none.
    async fn abort_stale_multipart_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }

    /// A URL at which a client may GET the object `key` itself (ranges too)
    /// for `expires_in`, so that its bytes bypass berth: an object store's
    /// presigned URL. `None` when the backend has none (the filesystem). No
    /// request to the store: the caller has checked that the object exists.
    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<Option<String>> {
        let _ = (key, expires_in);
        Ok(None)
    }
}
