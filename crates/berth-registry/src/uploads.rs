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
        self.backend
            .put(&layout::upload_started_at(name, &id), Bytes::from(now_rfc3339()))
            .await?;
        self.uploads.insert(
            session_key(name, &id),
            Session {
                offset: 0,
                hasher: Some(Algorithm::Sha256.digester()),
            },
        );
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
        Ok(self.uploads.insert(
            key,
            Session {
                offset: 0,
                hasher: None,
            },
        ))
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
        session.offset = offset;
        session.hasher = Some(hasher);
        Ok(())
    }

    pub async fn upload_status(&self, name: &RepoName, id: &str) -> Result<UploadStatus> {
        let session = self.session(name, id).await?;
        let mut s = session.lock().await;
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
        let session = self.session(name, id).await?;
        let mut s = session.lock().await;
        self.recover(name, id, &mut s).await?;
        self.append_locked(name, id, &mut s, start, body).await?;
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
            .write_stream(&layout::upload_data(name, id), s.offset, &mut hasher, body)
            .await
        {
            Ok(offset) => {
                s.offset = offset;
                s.hasher = Some(hasher);
                Ok(())
            }
            // The stored data may now hold part of the chunk: leave the hash
            // state empty so the next request rebuilds it from storage.
            Err(e) => Err(e),
        }
    }

    /// Streams `body` to the staged object `key` at `offset`, hashing it on the way.
    async fn write_stream(&self, key: &str, offset: u64, hasher: &mut Digester, mut body: ByteStream) -> Result<u64> {
        let mut writer = self.backend.append(key, offset).await.map_err(|e| match e {
            StorageError::OffsetMismatch { expected, actual, .. } => RegistryError::UploadOutOfOrder {
                offset: actual,
                got: expected,
            },
            e => e.into(),
        })?;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(RegistryError::Body)?;
            hasher.update(&chunk);
            writer.write(chunk).await?;
        }
        Ok(writer.finish().await?)
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
        let session = self.session(name, id).await?;
        let mut s = session.lock().await;
        self.recover(name, id, &mut s).await?;
        // Always append, even nothing: it creates the data of an empty blob.
        self.append_locked(name, id, &mut s, start, body.unwrap_or_else(empty_stream))
            .await?;
        let hasher = s.hasher.take().expect("set by a successful append");
        let data = layout::upload_data(name, id);
        let result = self.commit_blob(name, &data, digest, hasher).await;
        // Whatever the outcome, the session is over: a digest mismatch cannot be mended.
        self.backend.delete_prefix(&layout::upload_dir(name, id)).await?;
        self.uploads.remove(&session_key(name, id));
        result
    }

    /// Verifies the staged object's digest and moves it into the blob store.
    async fn commit_blob(&self, name: &RepoName, staged: &str, expected: &Digest, hasher: Digester) -> Result<()> {
        let actual = if hasher.algorithm() == expected.algorithm() {
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
        match self.backend.head(&blob).await {
            // Already stored (by another repository or a concurrent push): keep the existing bytes.
            Ok(_) => self.backend.delete(staged).await?,
            Err(e) if e.is_not_found() => self.backend.promote(staged, &blob).await?,
            Err(e) => return Err(e.into()),
        }
        self.link_blob(name, expected).await
    }

    /// Stores a whole blob in one request (POST ?digest= or an upload of one PUT).
    pub async fn put_blob(&self, name: &RepoName, digest: &Digest, body: ByteStream) -> Result<()> {
        self.ensure_writable(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let staged = layout::upload_data(name, &id);
        // Registered so that a purge running meanwhile leaves this (start-time-less) upload alone.
        let key = session_key(name, &id);
        self.uploads.insert(
            key.clone(),
            Session {
                offset: 0,
                hasher: None,
            },
        );
        let mut hasher = digest.algorithm().digester();
        let result = match self.write_stream(&staged, 0, &mut hasher, body).await {
            Ok(_) => self.commit_blob(name, &staged, digest, hasher).await,
            Err(e) => Err(e),
        };
        let cleanup = self.backend.delete_prefix(&layout::upload_dir(name, &id)).await;
        self.uploads.remove(&key);
        cleanup?;
        result
    }

    pub async fn cancel_upload(&self, name: &RepoName, id: &str) -> Result<()> {
        self.ensure_writable(name)?;
        let session = self.session(name, id).await?;
        let _guard = session.lock().await;
        self.backend.delete_prefix(&layout::upload_dir(name, id)).await?;
        self.uploads.remove(&session_key(name, id));
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
