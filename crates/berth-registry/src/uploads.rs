//! Blob uploads: sessions (POST, PATCH, PUT, GET status, DELETE), monolithic
//! pushes and their digest verification.
//!
//! Bytes are hashed as they stream through, so finishing an upload never
//! re-reads it. The hash state lives in memory; after a restart (or a failed
//! chunk) it is rebuilt once from the stored data, so sessions survive
//! restarts with the same Location.

use crate::hashing::PipelinedHasher;
use crate::{Registry, RegistryError, Result};
use berth_spec::{Algorithm, Digest, Digester, RepoName};
use berth_storage::{layout, ByteStream, ObjectBody, StorageError};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

/// Where an upload stands, as reported in `Location`, `Range` and `Docker-Upload-UUID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: String,
    /// Bytes received so far.
    pub offset: u64,
}

struct Session {
    offset: u64,
    /// `None` when the state must be rebuilt from storage first.
    hasher: Option<Digester>,
    /// Set once the upload is finished or cancelled: a request that fetched
    /// the session before it left the table must not revive it.
    closed: bool,
}

impl Session {
    fn new(hasher: Option<Digester>) -> Session {
        Session {
            offset: 0,
            hasher,
            closed: false,
        }
    }
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

/// In-memory state of open upload sessions, keyed by "<name>/<id>".
#[derive(Default)]
pub(crate) struct UploadTable {
    sessions: Mutex<HashMap<String, SessionRef>>,
}

impl UploadTable {
    /// Closes a session for a purge unless a request is working on it right
    /// now (then returns false and changes nothing). The closed session stays
    /// in the table, also when it was not there (a session of before a
    /// restart), until the purge has deleted its file and calls `remove`: a
    /// request arriving meanwhile finds it closed instead of finding the file
    /// and reviving the session.
    pub(crate) fn close_if_idle(&self, key: &str) -> bool {
        let mut map = self.sessions.lock().unwrap();
        let session = map
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Session::new(None))));
        let closed = match session.try_lock() {
            Ok(mut s) => {
                s.closed = true;
                true
            }
            Err(_) => false,
        };
        closed
    }

    fn get(&self, key: &str) -> Option<SessionRef> {
        self.sessions.lock().unwrap().get(key).cloned()
    }

    fn insert(&self, key: String, session: Session) -> SessionRef {
        let mut map = self.sessions.lock().unwrap();
        map.entry(key)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(session)))
            .clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    pub(crate) fn remove(&self, key: &str) {
        self.sessions.lock().unwrap().remove(key);
    }
}

pub(crate) fn session_key(name: &RepoName, id: &str) -> String {
    format!("{name}/{id}")
}

/// Upload ids appear in URLs and storage keys; only plain ids are accepted.
fn check_id(id: &str) -> Result<()> {
    let ok =
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(RegistryError::UploadUnknown(id.to_owned()))
    }
}

fn empty_stream() -> ByteStream {
    futures::stream::empty().boxed()
}

/// Blobs up to this size pushed whole onto an object store are written to
/// their key directly (see `Registry::commit_small_blob`); the S3 backend
/// holds as much in memory for a staged write anyway.
const SMALL_DIRECT: usize = 1 << 20;

/// A request body read up to a size.
enum Small {
    /// All of it, no larger than the limit.
    Whole(Bytes),
    /// Larger: what was read, then the rest, as one stream again.
    Larger(ByteStream),
}

async fn read_small(mut body: ByteStream, limit: usize) -> Result<Small> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(RegistryError::Body)?;
        total += chunk.len();
        chunks.push(chunk);
        if total > limit {
            let read = futures::stream::iter(chunks.into_iter().map(Ok));
            return Ok(Small::Larger(read.chain(body).boxed()));
        }
    }
    Ok(Small::Whole(match chunks.len() {
        1 => chunks.pop().expect("one"),
        _ => Bytes::from(chunks.concat()),
    }))
}

impl Registry {
    pub async fn start_upload(&self, name: &RepoName) -> Result<UploadStatus> {
        self.ensure_writable(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = session_key(name, &id);
        // In the table before anything is on disk: a purge running meanwhile
        // would otherwise take the new file for debris.
        self.uploads
            .insert(key.clone(), Session::new(Some(Algorithm::Sha256.digester())));
        // Not made durable: a session lost in a crash costs the client a new
        // POST, while an fsync here is a quarter of a small push's cost.
        if let Err(e) = self
            .backend
            .put_ephemeral(&layout::upload_data(name, &id), Bytes::new())
            .await
        {
            self.uploads.remove(&key);
            return Err(e.into());
        }
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Finds a session in memory or, after a restart, in storage.
    async fn session(&self, name: &RepoName, id: &str) -> Result<SessionRef> {
        check_id(id)?;
        let key = session_key(name, id);
        if let Some(s) = self.uploads.get(&key) {
            return Ok(s);
        }
        match self.backend.head(&layout::upload_data(name, id)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Err(RegistryError::UploadUnknown(id.to_owned())),
            Err(e) => return Err(e.into()),
        }
        Ok(self.uploads.insert(key, Session::new(None)))
    }

    /// Locks a session for one request; a session closed meanwhile is unknown.
    async fn lock_session(&self, name: &RepoName, id: &str) -> Result<tokio::sync::OwnedMutexGuard<Session>> {
        let session = self.session(name, id).await?;
        let s = session.lock_owned().await;
        if s.closed {
            return Err(RegistryError::UploadUnknown(id.to_owned()));
        }
        Ok(s)
    }

    /// Brings a session whose hash state was lost back in line with storage.
    /// On shared storage (S3 replicas) another process may have appended to
    /// the session since this one last did: one HEAD tells, and a session
    /// that moved on (or was finished) elsewhere is read again.
    async fn recover(&self, name: &RepoName, id: &str, session: &mut Session) -> Result<()> {
        if session.hasher.is_some() {
            if self.config.exclusive_storage {
                return Ok(());
            }
            match self.backend.head(&layout::upload_data(name, id)).await {
                Ok(meta) if meta.size == session.offset => return Ok(()),
                Ok(_) => session.hasher = None,
                Err(e) if e.is_not_found() => return Err(RegistryError::UploadUnknown(id.to_owned())),
                Err(e) => return Err(e.into()),
            }
        }
        let (offset, hasher) = match self.backend.open(&layout::upload_data(name, id), None).await {
            Ok(body) => (body.len(), hash_body(body, Algorithm::Sha256).await?),
            // Purged or cancelled while this request waited for the session.
            Err(e) if e.is_not_found() => return Err(RegistryError::UploadUnknown(id.to_owned())),
            Err(e) => return Err(e.into()),
        };
        session.offset = offset;
        session.hasher = Some(hasher);
        Ok(())
    }

    pub async fn upload_status(&self, name: &RepoName, id: &str) -> Result<UploadStatus> {
        let mut s = self.lock_session(name, id).await?;
        self.recover(name, id, &mut s).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: s.offset,
        })
    }

    /// Appends a chunk (PATCH). `start` is the first byte's offset when the
    /// client sent Content-Range; it must equal the bytes received so far.
    pub async fn append_upload(
        &self,
        name: &RepoName,
        id: &str,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadStatus> {
        self.ensure_writable(name)?;
        let mut s = self.lock_session(name, id).await?;
        self.recover(name, id, &mut s).await?;
        self.append_locked(name, id, &mut s, start, body, None).await?;
        Ok(UploadStatus {
            id: id.to_owned(),
            offset: s.offset,
        })
    }

    async fn append_locked(
        &self,
        name: &RepoName,
        id: &str,
        s: &mut Session,
        start: Option<u64>,
        body: ByteStream,
        link: Option<&Digest>,
    ) -> Result<()> {
        if let Some(start) = start {
            if start != s.offset {
                return Err(RegistryError::UploadOutOfOrder {
                    offset: s.offset,
                    got: start,
                });
            }
        }
        let mut hasher = s.hasher.take().expect("recovered before appending");
        match self
            .write_stream(
                &layout::upload_data(name, id),
                s.offset,
                &mut hasher,
                body,
                link.map(|d| (name, d)),
            )
            .await
        {
            Ok(offset) => {
                s.offset = offset;
                s.hasher = Some(hasher);
                Ok(())
            }
            // The stored data may now hold part of the chunk: leave the hash
            // state empty so the next request rebuilds it from storage.
            // Its data gone from under it means the upload was purged.
            Err(RegistryError::Storage(e)) if e.is_not_found() => Err(RegistryError::UploadUnknown(id.to_owned())),
            Err(e) => Err(e),
        }
    }

    /// Streams `body` to the staged object `key` at `offset`, hashing it on the way.
    /// After an error `hasher` may hold all, some or none of the bytes:
    /// callers drop it (an upload's next request rebuilds its hash state from
    /// the stored data).
    ///
    /// With `link`, once the last byte is hashed and the digest matches, the
    /// repository link is written while the data is synced: both are durable
    /// writes, and the push waits for one round of them instead of two.
    async fn write_stream(
        &self,
        key: &str,
        offset: u64,
        hasher: &mut Digester,
        mut body: ByteStream,
        link: Option<(&RepoName, &Digest)>,
    ) -> Result<u64> {
        // The stored size disagreeing with the session surfaces from any of
        // the three calls (a backend may open lazily).
        let storage = |e: StorageError| match e {
            StorageError::OffsetMismatch { expected, actual, .. } => RegistryError::UploadOutOfOrder {
                offset: actual,
                got: expected,
            },
            e => e.into(),
        };
        let mut writer = self.backend.append(key, offset).await.map_err(storage)?;
        let mut hashing = PipelinedHasher::new(std::mem::replace(hasher, hasher.algorithm().digester()));
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(RegistryError::Body)?;
            hashing.update(&chunk).await;
            writer.write(chunk).await.map_err(storage)?;
        }
        // The last bytes are still being hashed on one thread and written on
        // another: wait for both at once rather than in turn (the writer's
        // drain is the longer, so this measured within noise: 1.00x, 1.03x).
        // The link needs the digest, not the data, so it goes as soon as the
        // digest is known; a link to data that never lands names a blob that
        // does not exist, which reads as unknown.
        let hash_then_link = async {
            let hashed = hashing.finish().await;
            let linked = match link {
                Some((name, digest))
                    if hashed.algorithm() == digest.algorithm() && &hashed.clone().finish() == digest =>
                {
                    self.link_blob(name, digest).await
                }
                _ => Ok(()),
            };
            (hashed, linked)
        };
        let (size, (hashed, linked)) = tokio::join!(writer.finish(), hash_then_link);
        *hasher = hashed;
        let size = size.map_err(storage)?;
        linked?;
        Ok(size)
    }

    /// Finishes an upload (PUT ?digest=), appending a last chunk if given.
    pub async fn finish_upload(
        &self,
        name: &RepoName,
        id: &str,
        digest: &Digest,
        start: Option<u64>,
        body: Option<ByteStream>,
    ) -> Result<()> {
        self.ensure_writable(name)?;
        let mut s = self.lock_session(name, id).await?;
        self.recover(name, id, &mut s).await?;
        // From the link to the stored bytes, the garbage collector keeps its hands off.
        let _pin = self.gate.pin(digest).await;
        let mut body = body.unwrap_or_else(empty_stream);
        // A whole small blob in this one request, on an object store: written
        // to its key directly (see `commit_small_blob`); the session's empty
        // object goes meanwhile.
        if self.shared_gate.is_some() && s.offset == 0 && start.unwrap_or(0) == 0 {
            match read_small(body, SMALL_DIRECT).await? {
                Small::Whole(bytes) => {
                    let (committed, closed) = tokio::join!(
                        self.commit_small_blob(name, digest, bytes, true),
                        self.close_session(name, id, &mut s, false)
                    );
                    committed?;
                    return closed;
                }
                Small::Larger(rest) => body = rest,
            }
        }
        // Always append, even nothing: it creates the data of an empty blob.
        self.append_locked(name, id, &mut s, start, body, Some(digest)).await?;
        let hasher = s.hasher.take().expect("set by a successful append");
        let data = layout::upload_data(name, id);
        let result = match self.commit_blob(name, &data, s.offset, digest, hasher, true).await {
            Err(RegistryError::Storage(e)) if e.is_not_found() => Err(RegistryError::UploadUnknown(id.to_owned())),
            r => r,
        };
        // Whatever the outcome, the session is over: a digest mismatch cannot be mended.
        let data_gone = result.is_ok();
        self.close_session(name, id, &mut s, data_gone).await?;
        result
    }

    /// Verifies the staged object's digest and moves it into the blob store;
    /// `linked` when the streaming wrote `name`'s link to it.
    async fn commit_blob(
        &self,
        name: &RepoName,
        staged: &str,
        size: u64,
        expected: &Digest,
        hasher: Digester,
        linked: bool,
    ) -> Result<()> {
        // Both callers streamed the bytes through `write_stream` with the link
        // asked for, which wrote it if the streamed hash is the expected digest.
        let streamed = hasher.algorithm() == expected.algorithm();
        let actual = if streamed {
            hasher.finish()
        } else {
            // Rare: a digest in another algorithm than the one hashed while streaming.
            let body = self.backend.open(staged, None).await?;
            hash_body(body, expected.algorithm()).await?.finish()
        };
        if &actual != expected {
            return Err(RegistryError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        // On storage other processes write, the pin in the store comes now,
        // after the streaming (which may take longer than a pin is valid),
        // before the existing bytes are trusted; the link the streaming wrote
        // is written again under it (see `gc::shared`).
        let shared = self.pin_in_store(&[expected]).await?;
        let blob = layout::blob_data(expected);
        let store = async {
            match self.backend.head(&blob).await {
                // Already stored (by another repository or a concurrent push): keep the existing bytes.
                Ok(meta) if meta.size == size => self.backend.delete(staged).await,
                // Stored bytes of the wrong size cannot be this digest (a torn copy
                // put there by hand or by another tool): the verified upload replaces them.
                Ok(meta) => {
                    tracing::warn!(%expected, stored = meta.size, size, "replacing a stored blob of the wrong size");
                    self.backend.promote(staged, &blob).await
                }
                Err(e) if e.is_not_found() => self.backend.promote(staged, &blob).await,
                Err(e) => Err(e),
            }
        };
        // The link was written while the data was synced, or (a digest in
        // another algorithm than the one streamed) is written while the blob
        // is moved into place. Either way both are durable before the client
        // hears of success, and a link that outlives a failed or interrupted
        // move points at nothing, which reads as an unknown blob, as for a
        // blob removed by garbage collection.
        if streamed {
            store.await?;
            if let Some(pins) = shared {
                pins.confirm()?;
                if linked {
                    let key = layout::layer_link(name, expected);
                    self.backend
                        .put(&key, Bytes::from(layout::link_content(expected)))
                        .await?;
                }
            }
            return Ok(());
        }
        let (stored, linked) = tokio::join!(store, self.link_blob(name, expected));
        stored?;
        if let Some(pins) = shared {
            pins.confirm()?;
        }
        linked
    }

    /// Stores a whole blob in one request (POST ?digest= or an upload of one PUT).
    pub async fn put_blob(&self, name: &RepoName, digest: &Digest, body: ByteStream) -> Result<()> {
        self.stage_and_commit(name, digest, body, true).await.map(|_| ())
    }

    /// Stores a blob under `digest` without linking it into `name` (`berth
    /// migrate` copies the links itself, after every blob is in place), and
    /// returns its size. Like a push: staged as an upload of `name` (so a
    /// stale-upload purge removes what an interrupted copy leaves behind),
    /// hashed as it streams, and moved into the blob store only if the bytes
    /// are `digest`'s; otherwise [`RegistryError::DigestMismatch`] and nothing
    /// is stored.
    pub async fn store_blob(&self, name: &RepoName, digest: &Digest, body: ByteStream) -> Result<u64> {
        self.stage_and_commit(name, digest, body, false).await
    }

    async fn stage_and_commit(&self, name: &RepoName, digest: &Digest, body: ByteStream, link: bool) -> Result<u64> {
        // A copy that links nothing only stages under `name`: it is not a
        // push into it (`aug/` repositories, read-only to pushes, are copied too).
        if link {
            self.ensure_writable(name)?;
        }
        // From the link to the stored bytes, the garbage collector keeps its hands off.
        let _pin = self.gate.pin(digest).await;
        let body = if self.shared_gate.is_some() {
            match read_small(body, SMALL_DIRECT).await? {
                Small::Whole(bytes) => return self.commit_small_blob(name, digest, bytes, link).await,
                Small::Larger(body) => body,
            }
        } else {
            body
        };
        let id = uuid::Uuid::new_v4().to_string();
        let staged = layout::upload_data(name, &id);
        // Registered so that a purge running meanwhile leaves this (start-time-less) upload alone.
        let key = session_key(name, &id);
        self.uploads.insert(key.clone(), Session::new(None));
        // Hashed in the digest's own algorithm, so `commit_blob` links only
        // through `write_stream`, which is asked to when `link` is set.
        let mut hasher = digest.algorithm().digester();
        let link = link.then_some((name, digest));
        let result = match self.write_stream(&staged, 0, &mut hasher, body, link).await {
            Ok(size) => self
                .commit_blob(name, &staged, size, digest, hasher, link.is_some())
                .await
                .map(|()| size),
            Err(e) => Err(e),
        };
        // A committed blob took the staged file with it (or deleted it).
        let cleanup = match result {
            Ok(_) => Ok(()),
            Err(_) => self.backend.delete(&staged).await,
        };
        self.uploads.remove(&key);
        let size = result?;
        cleanup?;
        Ok(size)
    }

    /// Stores a small blob received whole, on storage other processes write
    /// (an object store): checked in memory and written to its key directly,
    /// where staging it would cost a PUT, a copy and a delete more, round
    /// trips a small push is mostly made of. The same steps as
    /// `commit_blob` otherwise: the pin in the store before the existing
    /// bytes are trusted, the link written last, under it.
    async fn commit_small_blob(&self, name: &RepoName, expected: &Digest, bytes: Bytes, link: bool) -> Result<u64> {
        let mut hasher = expected.algorithm().digester();
        hasher.update(&bytes);
        let actual = hasher.finish();
        if &actual != expected {
            return Err(RegistryError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let size = bytes.len() as u64;
        let pins = self.pin_in_store(&[expected]).await?;
        let blob = layout::blob_data(expected);
        match self.backend.head(&blob).await {
            Ok(meta) if meta.size == size => {}
            Ok(meta) => {
                tracing::warn!(%expected, stored = meta.size, size, "replacing a stored blob of the wrong size");
                self.backend.put(&blob, bytes).await?;
            }
            Err(e) if e.is_not_found() => self.backend.put(&blob, bytes).await?,
            Err(e) => return Err(e.into()),
        }
        if let Some(pins) = pins {
            pins.confirm()?;
        }
        if link {
            self.backend
                .put(
                    &layout::layer_link(name, expected),
                    Bytes::from(layout::link_content(expected)),
                )
                .await?;
        }
        Ok(size)
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &str) -> Result<()> {
        self.ensure_writable(name)?;
        let mut s = self.lock_session(name, id).await?;
        self.close_session(name, id, &mut s, false).await
    }

    /// Ends a session for good: closed (requests holding it or finding it in
    /// the table see that), its file removed unless the blob store took it
    /// (`data_gone`), and only then forgotten: until the file is gone, a
    /// request must find the closed session rather than the file.
    async fn close_session(&self, name: &RepoName, id: &str, s: &mut Session, data_gone: bool) -> Result<()> {
        s.closed = true;
        let deleted = match data_gone {
            true => Ok(()),
            false => self.backend.delete(&layout::upload_data(name, id)).await,
        };
        self.uploads.remove(&session_key(name, id));
        Ok(deleted?)
    }
}

/// Hashes a stored object from the start.
async fn hash_body(body: ObjectBody, algorithm: Algorithm) -> Result<Digester> {
    let mut hasher = algorithm.digester();
    match body {
        ObjectBody::File { mut file, offset, len } => {
            let hasher = tokio::task::spawn_blocking(move || -> std::io::Result<Digester> {
                file.seek(SeekFrom::Start(offset))?;
                let mut reader = file.take(len);
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = reader.read(&mut buf)?;
                    if n == 0 {
                        return Ok(hasher);
                    }
                    hasher.update(&buf[..n]);
                }
            })
            .await
            .map_err(|e| RegistryError::Body(std::io::Error::other(e)))?;
            hasher.map_err(|e| RegistryError::Storage(StorageError::io("upload data", e)))
        }
        ObjectBody::Bytes(b) => {
            hasher.update(&b);
            Ok(hasher)
        }
        ObjectBody::Stream { mut stream, .. } => {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| RegistryError::Storage(StorageError::io("upload data", e)))?;
                hasher.update(&chunk);
            }
            Ok(hasher)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;
    use berth_storage::FsBackend;
    use std::time::Duration;

    fn registry(max_age: Duration) -> (tempfile::TempDir, Arc<Registry>) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path()));
        let reg = Registry::new(
            backend,
            RegistryConfig {
                upload_max_age: max_age,
                ..RegistryConfig::default()
            },
        );
        (dir, Arc::new(reg))
    }

    fn stream_of(bytes: &'static [u8]) -> ByteStream {
        futures::stream::iter([Ok(Bytes::from_static(bytes))]).boxed()
    }

    /// The session file becomes the blob: a push creates no other file or
    /// directory it then deletes (freed inodes make ext4 without a journal
    /// slow to allocate), and leaves nothing behind in `_uploads`.
    #[tokio::test]
    async fn the_upload_file_becomes_the_blob() {
        use std::os::unix::fs::MetadataExt;
        let (dir, reg) = registry(Duration::from_secs(3600));
        let name: RepoName = "flat/upload".parse().unwrap();
        let st = reg.start_upload(&name).await.unwrap();
        let staged = dir.path().join(layout::upload_data(&name, &st.id));
        let inode = std::fs::metadata(&staged).unwrap().ino();
        reg.append_upload(&name, &st.id, Some(0), stream_of(b"hello "))
            .await
            .unwrap();
        let digest = Digest::sha256_of(b"hello world");
        reg.finish_upload(&name, &st.id, &digest, Some(6), Some(stream_of(b"world")))
            .await
            .unwrap();
        let blob = dir.path().join(layout::blob_data(&digest));
        assert_eq!(std::fs::read(&blob).unwrap(), b"hello world");
        assert_eq!(std::fs::metadata(&blob).unwrap().ino(), inode);
        assert!(reg.backend.list(&layout::uploads_dir(&name)).await.unwrap().is_empty());
    }

    /// Uploads are purged by idle time (the file's mtime), and uploads left in
    /// distribution's layout (a directory with a start time) by their start.
    #[tokio::test]
    async fn purge_takes_idle_uploads_and_stale_legacy_ones() {
        let (dir, reg) = registry(Duration::from_secs(3600));
        let name: RepoName = "purge/idle".parse().unwrap();
        let idle = reg.start_upload(&name).await.unwrap();
        let active = reg.start_upload(&name).await.unwrap();
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join(layout::upload_data(&name, &idle.id)))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        let legacy = |id: &str, started: Option<&str>| {
            let d = dir.path().join(layout::upload_data(&name, id));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("data"), b"partial").unwrap();
            if let Some(t) = started {
                std::fs::write(d.join("startedat"), t).unwrap();
            }
            d
        };
        let old = legacy("legacy-old", Some("2020-01-02T03:04:05Z"));
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let recent = legacy("legacy-recent", Some(&now));
        let broken = legacy("legacy-no-start", None);

        assert_eq!(reg.purge_stale_uploads().await.unwrap(), 3);
        assert!(matches!(
            reg.upload_status(&name, &idle.id).await,
            Err(RegistryError::UploadUnknown(_))
        ));
        assert_eq!(reg.upload_status(&name, &active.id).await.unwrap().offset, 0);
        assert!(!old.exists() && !broken.exists());
        assert!(recent.join("startedat").exists());
        // A legacy upload is not resumed: its id names a directory, not a session.
        assert!(matches!(
            reg.upload_status(&name, "legacy-recent").await,
            Err(RegistryError::UploadUnknown(_))
        ));
    }

    /// A purge running while uploads start must never take a new upload for debris.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn purge_never_races_a_starting_upload() {
        let (_dir, reg) = registry(Duration::from_secs(3600));
        let name: RepoName = "race/start".parse().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let purger = {
            let (reg, stop) = (reg.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    reg.purge_stale_uploads().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut ids = Vec::new();
        for _ in 0..300 {
            let st = reg.start_upload(&name).await.expect("starting an upload never fails");
            ids.push(st.id);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        purger.await.unwrap();
        for id in ids {
            assert_eq!(reg.upload_status(&name, &id).await.unwrap().offset, 0);
        }
    }

    /// Two registries on one storage that other processes may write (S3
    /// replicas): chunks sent to A, B, A again, then finished on B. A's
    /// session moved on while it was away; it must see that, not refuse the
    /// chunk at its old offset.
    #[tokio::test]
    async fn a_session_that_moved_on_elsewhere_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let shared = || {
            let config = RegistryConfig {
                exclusive_storage: false,
                ..RegistryConfig::default()
            };
            Registry::new(Arc::new(FsBackend::new(dir.path())), config)
        };
        let (a, b) = (shared(), shared());
        let name: RepoName = "replicas/upload".parse().unwrap();
        let st = a.start_upload(&name).await.unwrap();
        a.append_upload(&name, &st.id, Some(0), stream_of(b"one "))
            .await
            .unwrap();
        b.append_upload(&name, &st.id, Some(4), stream_of(b"two "))
            .await
            .unwrap();
        let at_a = a
            .append_upload(&name, &st.id, Some(8), stream_of(b"three "))
            .await
            .unwrap();
        assert_eq!(at_a.offset, 14);
        let digest = Digest::sha256_of(b"one two three four");
        b.finish_upload(&name, &st.id, &digest, Some(14), Some(stream_of(b"four")))
            .await
            .unwrap();
        // Finished on B: unknown on A, which had it in memory.
        assert!(matches!(
            a.upload_status(&name, &st.id).await,
            Err(RegistryError::UploadUnknown(_))
        ));
    }

    /// A body is read whole up to the limit, and a larger one comes back as
    /// one stream with not a byte lost or moved.
    #[tokio::test]
    async fn small_bodies_are_read_whole_and_larger_ones_stream_on() {
        let data = big_blob(3 * 65_537 + 11, 7);
        match read_small(big_stream(&data), data.len()).await.unwrap() {
            Small::Whole(b) => assert_eq!(&b[..], &data[..]),
            Small::Larger(_) => panic!("exactly the limit is small"),
        }
        match read_small(big_stream(&data), 100_000).await.unwrap() {
            Small::Larger(rest) => {
                let back: Vec<u8> = rest.map(|c| c.unwrap().to_vec()).concat().await;
                assert_eq!(back, data);
            }
            Small::Whole(_) => panic!("over the limit"),
        }
        match read_small(futures::stream::empty().boxed(), 10).await.unwrap() {
            Small::Whole(b) => assert!(b.is_empty()),
            Small::Larger(_) => panic!("empty"),
        }
    }

    /// On shared storage a small blob pushed whole (in one request, or as
    /// the one PUT of a session) is written to its key directly (no staged
    /// upload, none left behind), verified first; a large one still goes
    /// through the staged write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_whole_blobs_on_shared_storage_skip_the_staged_write() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FsBackend::new(dir.path()));
        let reg = Registry::new(
            backend,
            RegistryConfig {
                exclusive_storage: false,
                ..RegistryConfig::default()
            },
        );
        let name: RepoName = "shared/small".parse().unwrap();
        let small = b"a small layer".to_vec();
        let wrong = Digest::sha256_of(b"other bytes");
        assert!(matches!(
            reg.put_blob(&name, &wrong, big_stream(&small)).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(reg
            .backend
            .head(&layout::blob_data(&wrong))
            .await
            .unwrap_err()
            .is_not_found());
        let digest = Digest::sha256_of(&small);
        reg.put_blob(&name, &digest, big_stream(&small)).await.unwrap();
        let large = big_blob(SMALL_DIRECT + 70_000, 3);
        let large_digest = Digest::sha256_of(&large);
        reg.put_blob(&name, &large_digest, big_stream(&large)).await.unwrap();
        for (d, bytes) in [(&digest, &small), (&large_digest, &large)] {
            assert_eq!(&reg.backend.get(&layout::blob_data(d)).await.unwrap()[..], &bytes[..]);
            assert!(reg.backend.head(&layout::layer_link(&name, d)).await.is_ok(), "linked");
        }
        // POST, then the whole blob with the PUT: the session is closed.
        let in_session = b"a small layer in a session".to_vec();
        let session_digest = Digest::sha256_of(&in_session);
        let up = reg.start_upload(&name).await.unwrap();
        let wrong_up = reg.start_upload(&name).await.unwrap();
        assert!(matches!(
            reg.finish_upload(&name, &wrong_up.id, &wrong, None, Some(big_stream(&in_session)))
                .await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        reg.finish_upload(&name, &up.id, &session_digest, None, Some(big_stream(&in_session)))
            .await
            .unwrap();
        assert_eq!(
            &reg.backend.get(&layout::blob_data(&session_digest)).await.unwrap()[..],
            &in_session[..]
        );
        assert!(reg
            .backend
            .head(&layout::layer_link(&name, &session_digest))
            .await
            .is_ok());
        for id in [&up.id, &wrong_up.id] {
            assert!(matches!(
                reg.upload_status(&name, id).await,
                Err(RegistryError::UploadUnknown(_))
            ));
        }
        assert!(reg.backend.list(&layout::uploads_dir(&name)).await.unwrap().is_empty());
    }

    /// Bytes of a few MiB in pieces of odd sizes, as a request body.
    fn big_stream(data: &[u8]) -> ByteStream {
        let pieces: Vec<_> = data.chunks(65_537).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(pieces).boxed()
    }

    fn big_blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 9) as u8 ^ seed)
            .collect()
    }

    /// Big bodies go through the storage's write pipeline: one whose bytes
    /// are not its digest is refused and stored nowhere; chunks of odd sizes,
    /// resumed by a new process, make exactly the blob.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_pipelined_pushes_verify_their_digest_and_resume_across_processes() {
        let (dir, reg) = registry(Duration::from_secs(3600));
        let name: RepoName = "big/push".parse().unwrap();
        let data = big_blob((3 << 20) + 12_345, 1);
        let wrong = Digest::sha256_of(&data[1..]);
        assert!(matches!(
            reg.put_blob(&name, &wrong, big_stream(&data)).await,
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(!dir.path().join(layout::blob_data(&wrong)).exists());
        let right = Digest::sha256_of(&data);
        assert!(!dir.path().join(layout::blob_data(&right)).exists());

        let st = reg.start_upload(&name).await.unwrap();
        let cut = [(5 << 20) + 7, (7 << 20) + 4099];
        let data = big_blob((9 << 20) + 1, 2);
        reg.append_upload(&name, &st.id, Some(0), big_stream(&data[..cut[0]]))
            .await
            .unwrap();
        // Another process (after a restart) takes the session over.
        drop(reg);
        let reg = Registry::new(Arc::new(FsBackend::new(dir.path())), RegistryConfig::default());
        let at = reg
            .append_upload(&name, &st.id, Some(cut[0] as u64), big_stream(&data[cut[0]..cut[1]]))
            .await
            .unwrap();
        assert_eq!(at.offset, cut[1] as u64);
        let digest = Digest::sha256_of(&data);
        reg.finish_upload(
            &name,
            &st.id,
            &digest,
            Some(cut[1] as u64),
            Some(big_stream(&data[cut[1]..])),
        )
        .await
        .unwrap();
        let stored = std::fs::read(dir.path().join(layout::blob_data(&digest))).unwrap();
        assert!(stored == data, "stored bytes differ");
    }

    #[tokio::test]
    async fn a_finished_or_cancelled_session_stays_closed() {
        let (_dir, reg) = registry(Duration::from_secs(3600));
        let name: RepoName = "closed/session".parse().unwrap();
        let st = reg.start_upload(&name).await.unwrap();
        // A request that got hold of the session before it was finished.
        let held = reg.session(&name, &st.id).await.unwrap();
        let digest = Digest::sha256_of(b"abc");
        reg.finish_upload(&name, &st.id, &digest, None, Some(stream_of(b"abc")))
            .await
            .unwrap();
        assert!(held.lock().await.closed);
        assert!(matches!(
            reg.append_upload(&name, &st.id, None, stream_of(b"x")).await,
            Err(RegistryError::UploadUnknown(_))
        ));
        let st = reg.start_upload(&name).await.unwrap();
        reg.cancel_upload(&name, &st.id).await.unwrap();
        assert!(matches!(
            reg.upload_status(&name, &st.id).await,
            Err(RegistryError::UploadUnknown(_))
        ));
        assert!(reg.backend.list(&layout::uploads_dir(&name)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn stale_uploads_are_purged_but_busy_ones_are_not() {
        let (_dir, reg) = registry(Duration::from_secs(0));
        let name: RepoName = "purge/me".parse().unwrap();
        let idle = reg.start_upload(&name).await.unwrap();
        let busy = reg.start_upload(&name).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let session = reg.session(&name, &busy.id).await.unwrap();
        let guard = session.lock().await;
        assert_eq!(reg.purge_stale_uploads().await.unwrap(), 1);
        drop(guard);
        assert!(matches!(
            reg.upload_status(&name, &idle.id).await,
            Err(RegistryError::UploadUnknown(_))
        ));
        assert_eq!(reg.upload_status(&name, &busy.id).await.unwrap().offset, 0);
        assert_eq!(reg.purge_stale_uploads().await.unwrap(), 1);
        assert!(reg.upload_status(&name, &busy.id).await.is_err());
    }
}
