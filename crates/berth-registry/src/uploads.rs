//! Blob uploads: sessions (POST, PATCH, PUT, GET status, DELETE), monolithic
//! pushes and their digest verification.
//!
//! Bytes are hashed as they stream through, so finishing an upload never
//! re-reads it. The hash state lives in memory; after a restart (or a failed
//! chunk) it is rebuilt once from the stored data, so sessions survive
//! restarts with the same Location.

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
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.sessions.lock().unwrap().contains_key(key)
    }

    /// Closes and forgets a session unless a request is working on it right
    /// now. Returns false (and changes nothing) when it is busy.
    pub(crate) fn close_if_idle(&self, key: &str) -> bool {
        let mut map = self.sessions.lock().unwrap();
        if let Some(session) = map.get(key) {
            match session.try_lock() {
                Ok(mut s) => s.closed = true,
                Err(_) => return false,
            }
            map.remove(key);
        }
        true
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn empty_stream() -> ByteStream {
    futures::stream::empty().boxed()
}

impl Registry {
    pub async fn start_upload(&self, name: &RepoName) -> Result<UploadStatus> {
        self.ensure_writable(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let key = session_key(name, &id);
        // In the table before anything is on disk: a purge running meanwhile
        // would otherwise take the directory without a start time for debris.
        self.uploads
            .insert(key.clone(), Session::new(Some(Algorithm::Sha256.digester())));
        // Not made durable: a session lost in a crash costs the client a new
        // POST, while an fsync here is a quarter of a small push's cost.
        if let Err(e) = self
            .backend
            .put_ephemeral(&layout::upload_started_at(name, &id), Bytes::from(now_rfc3339()))
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
        match self.backend.head(&layout::upload_started_at(name, id)).await {
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
    async fn recover(&self, name: &RepoName, id: &str, session: &mut Session) -> Result<()> {
        if session.hasher.is_some() {
            return Ok(());
        }
        let data = layout::upload_data(name, id);
        let (offset, hasher) = match self.backend.open(&data, None).await {
            Ok(body) => (body.len(), hash_body(body, Algorithm::Sha256).await?),
            Err(e) if e.is_not_found() => (0, Algorithm::Sha256.digester()),
            Err(e) => return Err(e.into()),
        };
        // Purged or cancelled while this request waited for the session.
        if !self.exists(&layout::upload_started_at(name, id)).await? {
            return Err(RegistryError::UploadUnknown(id.to_owned()));
        }
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
    ///
    /// With `link`, once the last byte is in and the digest matches, the
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
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(RegistryError::Body)?;
            hasher.update(&chunk);
            writer.write(chunk).await.map_err(storage)?;
        }
        match link {
            Some((name, digest)) if hasher.algorithm() == digest.algorithm() && &hasher.clone().finish() == digest => {
                let (size, linked) = tokio::join!(writer.finish(), self.link_blob(name, digest));
                let size = size.map_err(storage)?;
                linked?;
                Ok(size)
            }
            _ => writer.finish().await.map_err(storage),
        }
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
        // Always append, even nothing: it creates the data of an empty blob.
        self.append_locked(name, id, &mut s, start, body.unwrap_or_else(empty_stream), Some(digest))
            .await?;
        let hasher = s.hasher.take().expect("set by a successful append");
        let data = layout::upload_data(name, id);
        let result = match self.commit_blob(name, &data, s.offset, digest, hasher).await {
            Err(RegistryError::Storage(e)) if e.is_not_found() => Err(RegistryError::UploadUnknown(id.to_owned())),
            r => r,
        };
        // Whatever the outcome, the session is over: a digest mismatch cannot be mended.
        let data_gone = result.is_ok();
        self.close_session(name, id, &mut s, data_gone).await?;
        result
    }

    /// Verifies the staged object's digest and moves it into the blob store.
    async fn commit_blob(
        &self,
        name: &RepoName,
        staged: &str,
        size: u64,
        expected: &Digest,
        hasher: Digester,
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
            return Ok(store.await?);
        }
        let (stored, linked) = tokio::join!(store, self.link_blob(name, expected));
        stored?;
        linked
    }

    /// Stores a whole blob in one request (POST ?digest= or an upload of one PUT).
    pub async fn put_blob(&self, name: &RepoName, digest: &Digest, body: ByteStream) -> Result<()> {
        self.ensure_writable(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let staged = layout::upload_data(name, &id);
        // Registered so that a purge running meanwhile leaves this (start-time-less) upload alone.
        let key = session_key(name, &id);
        self.uploads.insert(key.clone(), Session::new(None));
        let mut hasher = digest.algorithm().digester();
        let result = match self
            .write_stream(&staged, 0, &mut hasher, body, Some((name, digest)))
            .await
        {
            Ok(size) => self.commit_blob(name, &staged, size, digest, hasher).await,
            Err(e) => Err(e),
        };
        let cleanup = self.backend.delete_prefix(&layout::upload_dir(name, &id)).await;
        self.uploads.remove(&key);
        cleanup?;
        result
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &str) -> Result<()> {
        self.ensure_writable(name)?;
        let mut s = self.lock_session(name, id).await?;
        self.close_session(name, id, &mut s, false).await
    }

    /// Ends a session for good. The start time goes first: without it no
    /// request, in this process or after a restart, can find the session
    /// again. Once the data has moved into the blob store (`data_gone`) the
    /// start time is all that is left, and removing the directory is enough.
    async fn close_session(&self, name: &RepoName, id: &str, s: &mut Session, data_gone: bool) -> Result<()> {
        s.closed = true;
        if !data_gone {
            self.backend.delete(&layout::upload_started_at(name, id)).await?;
        }
        self.uploads.remove(&session_key(name, id));
        self.backend.delete_prefix(&layout::upload_dir(name, id)).await?;
        Ok(())
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
            },
        );
        (dir, Arc::new(reg))
    }

    fn stream_of(bytes: &'static [u8]) -> ByteStream {
        futures::stream::iter([Ok(Bytes::from_static(bytes))]).boxed()
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
