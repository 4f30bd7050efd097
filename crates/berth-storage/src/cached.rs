//! A [`Backend`] that remembers what it read of the links and blobs of a
//! storage it is the only writer of, so that resolving a tag or checking that
//! a blob is in a repository costs no system call once it has been done.
//!
//! Why it is correct: it is used only where one process writes the storage
//! (the filesystem data directory, whose lock admits one server), and every
//! write of that process passes through it: `put`, `delete`, `delete_prefix`
//! and `promote` forget what they change after the change is made, so a read
//! that starts after a write returned sees the write. A read racing a write
//! must not put back what the write replaced: every write bumps an epoch, and
//! a read remembers its answer only if no write ended while it was reading.
//! Absences are remembered too (a pusher asks for blobs it has not pushed
//! yet); they are writes' business to forget like any other answer.
//!
//! The one other writer berth has, `berth import` into a served directory,
//! rewrites [`layout::FS_EXTERNAL_WRITES`] after each image it stores; the
//! server calls [`Cached::revalidate`] on a short interval and forgets
//! everything when that file changed (bounded staleness, see ARCHITECTURE.md).
//! Only [`layout::is_cacheable`] keys are remembered; everything else passes
//! through. The bytes of small blobs (image configs, small layers: at most
//! [`SMALL_BLOB`]) are kept too, since a blob's bytes never change under its
//! key: served from memory they cost no open, read or close. Memory is bounded
//! by a count of entries and a total of bytes: when either is full, the cache
//! is cleared, which keeps the hot set small and the code obvious.

use crate::backend::{AppendWriter, Backend, ObjectBody, ObjectMeta, Result, StorageError};
use crate::layout;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// At most this many keys are remembered (each a key of ~150 bytes and a
/// small value: a few MiB at most).
const MAX_ENTRIES: usize = 32_768;

/// Blobs up to this size are kept in memory once read...
pub const SMALL_BLOB: u64 = 16 * 1024;

/// ...up to this many bytes in all.
const MAX_CONTENT_BYTES: usize = 16 << 20;

pub struct Cached {
    inner: Arc<dyn Backend>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Ordered, so that `delete_prefix` forgets a subtree without a scan.
    entries: BTreeMap<String, Entry>,
    /// Bumped by every write, under the same lock as the forgetting.
    epoch: u64,
    /// The content of the external-writes marker last seen.
    external: Option<Bytes>,
    /// Bytes of blob content held.
    content_bytes: usize,
}

impl State {
    fn clear(&mut self) {
        self.entries.clear();
        self.content_bytes = 0;
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.content_bytes -= e.content.map_or(0, |c| c.len());
        }
    }
}

#[derive(Default, Clone)]
struct Entry {
    /// The answer of `head`, once asked (`None` inside: absent).
    head: Option<Option<ObjectMeta>>,
    /// The answer of `get`, once asked (`None` inside: absent).
    get: Option<Option<Bytes>>,
    /// The whole object, for small blobs once opened.
    content: Option<Bytes>,
}

impl Cached {
    pub fn new(inner: Arc<dyn Backend>) -> Cached {
        Cached {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// Forgets everything if another process wrote into the storage since the
    /// last call (it rewrote [`layout::FS_EXTERNAL_WRITES`]). The first call
    /// learns the marker's content.
    pub async fn revalidate(&self) -> Result<()> {
        let now = match self.inner.get(layout::FS_EXTERNAL_WRITES).await {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let mut state = self.state.lock().unwrap();
        if state.external != now {
            state.external = now;
            state.clear();
            state.epoch += 1;
        }
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.state.lock().unwrap().epoch
    }

    fn lookup<T>(&self, key: &str, pick: impl FnOnce(&Entry) -> Option<T>) -> Option<T> {
        self.state.lock().unwrap().entries.get(key).and_then(pick)
    }

    /// Remembers an answer read while no write ended (`epoch` unchanged).
    fn remember(&self, key: &str, epoch: u64, fill: impl FnOnce(&mut Entry)) {
        let mut state = self.state.lock().unwrap();
        if state.epoch != epoch {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES && !state.entries.contains_key(key) {
            state.clear();
        }
        fill(state.entries.entry(key.to_owned()).or_default());
    }

    /// Remembers the bytes of a small blob read while no write ended.
    fn remember_content(&self, key: &str, epoch: u64, bytes: Bytes) {
        let mut state = self.state.lock().unwrap();
        if state.epoch != epoch {
            return;
        }
        if state.content_bytes + bytes.len() > MAX_CONTENT_BYTES
            || (state.entries.len() >= MAX_ENTRIES && !state.entries.contains_key(key))
        {
            state.clear();
        }
        state.content_bytes += bytes.len();
        let entry = state.entries.entry(key.to_owned()).or_default();
        if let Some(old) = entry.content.replace(bytes) {
            state.content_bytes -= old.len();
        }
    }

    /// Forgets `key` (after a write of it ended).
    fn forget(&self, key: &str) {
        let mut state = self.state.lock().unwrap();
        state.epoch += 1;
        state.remove(key);
    }

    /// Forgets every key under `prefix/` (after they were deleted).
    fn forget_prefix(&self, prefix: &str) {
        let start = format!("{prefix}/");
        let mut state = self.state.lock().unwrap();
        state.epoch += 1;
        let doomed: Vec<String> = state
            .entries
            .range(start.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&start))
            .cloned()
            .collect();
        for k in doomed {
            state.remove(&k);
        }
    }
}

/// Splits a backend answer into what may be remembered: a value, an absence,
/// or an error that must not be (the next read tries again).
fn answer<T: Clone>(result: &Result<T>) -> Option<Option<T>> {
    match result {
        Ok(v) => Some(Some(v.clone())),
        Err(StorageError::NotFound(_)) => Some(None),
        Err(_) => None,
    }
}

fn replay<T>(key: &str, remembered: Option<T>) -> Result<T> {
    remembered.ok_or_else(|| StorageError::NotFound(key.to_owned()))
}

/// The part `range` (all when `None`) of a whole object held in memory.
fn part(key: &str, whole: Bytes, range: Option<Range<u64>>) -> Result<ObjectBody> {
    let size = whole.len() as u64;
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(StorageError::RangeNotSatisfiable {
            key: key.to_owned(),
            start: range.start,
            end: range.end,
            size,
        });
    }
    Ok(ObjectBody::Bytes(whole.slice(range.start as usize..range.end as usize)))
}

#[async_trait]
impl Backend for Cached {
    async fn get(&self, key: &str) -> Result<Bytes> {
        if !layout::is_cacheable(key) {
            return self.inner.get(key).await;
        }
        if let Some(hit) = self.lookup(key, |e| e.get.clone()) {
            return replay(key, hit);
        }
        let epoch = self.epoch();
        let result = self.inner.get(key).await;
        if let Some(a) = answer(&result) {
            // Only small objects (links) are worth keeping whole; a manifest
            // read through `get` has its own cache in the registry.
            if a.as_ref().is_none_or(|b| b.len() <= 256) {
                self.remember(key, epoch, |e| e.get = Some(a));
            }
        }
        result
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        if !layout::is_cacheable(key) {
            return self.inner.head(key).await;
        }
        if let Some(hit) = self.lookup(key, |e| e.head) {
            return replay(key, hit);
        }
        let epoch = self.epoch();
        let result = self.inner.head(key).await;
        if let Some(a) = answer(&result) {
            self.remember(key, epoch, |e| e.head = Some(a));
        }
        result
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        if !layout::is_cacheable(key) {
            return self.inner.open(key, range).await;
        }
        let (content, small) = match self.lookup(key, |e| Some((e.content.clone(), e.head))) {
            Some((content, head)) => (content, matches!(head, Some(Some(m)) if m.size <= SMALL_BLOB)),
            None => (None, false),
        };
        if let Some(whole) = content {
            return part(key, whole, range);
        }
        // Known (from a `head`, which every blob read starts with) to be
        // small: read it whole, keep it, serve the part asked for.
        if !small {
            return self.inner.open(key, range).await;
        }
        let epoch = self.epoch();
        match self.inner.open(key, None).await? {
            ObjectBody::File { file, offset, len } => {
                let mut buf = vec![0u8; len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, offset)
                    .map_err(|e| StorageError::io(key, e))?;
                let whole = Bytes::from(buf);
                self.remember_content(key, epoch, whole.clone());
                part(key, whole, range)
            }
            ObjectBody::Bytes(whole) => part(key, whole, range),
            other if range.is_none() => Ok(other),
            _ => self.inner.open(key, range).await,
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let result = self.inner.put(key, data).await;
        self.forget(key);
        result
    }

    async fn abort_stale_multipart_uploads(&self, older_than: std::time::Duration) -> Result<usize> {
        self.inner.abort_stale_multipart_uploads(older_than).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let result = self.inner.put_if_absent(key, data).await;
        self.forget(key);
        result
    }

    async fn put_ephemeral(&self, key: &str, data: Bytes) -> Result<()> {
        let result = self.inner.put_ephemeral(key, data).await;
        self.forget(key);
        result
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let result = self.inner.delete(key).await;
        self.forget(key);
        result
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let result = self.inner.delete_prefix(prefix).await;
        self.forget_prefix(prefix);
        result
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix).await
    }

    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.inner.list_keys_after(prefix, start_after, limit).await
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>> {
        // Staged objects are never cacheable, so appends change nothing remembered.
        debug_assert!(!layout::is_cacheable(key), "{key}");
        self.inner.append(key, offset).await
    }

    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<Option<String>> {
        self.inner.presigned_get(key, expires_in).await
    }

    async fn promote(&self, from: &str, to: &str) -> Result<()> {
        let result = self.inner.promote(from, to).await;
        self.forget(from);
        self.forget(to);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsBackend;
    use berth_spec::{Digest, RepoName, Tag};

    fn setup() -> (tempfile::TempDir, FsBackend, Cached) {
        let dir = tempfile::tempdir().unwrap();
        let fs = FsBackend::new(dir.path());
        let cached = Cached::new(Arc::new(fs.clone()));
        (dir, fs, cached)
    }

    fn keys() -> (String, String) {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let n: RepoName = "team/app".parse().unwrap();
        let t: Tag = "v1".parse().unwrap();
        (layout::tag_current_link(&n, &t), layout::blob_data(&d))
    }

    #[tokio::test]
    async fn answers_are_remembered_until_this_process_writes() {
        let (_dir, fs, cached) = setup();
        let (tag, blob) = keys();
        assert!(cached.get(&tag).await.unwrap_err().is_not_found());
        assert!(cached.head(&blob).await.unwrap_err().is_not_found());

        // Written behind the cache's back: the remembered absences stand,
        // which is what proves the answers come from memory.
        fs.put(&tag, Bytes::from_static(b"sha256:aa")).await.unwrap();
        fs.put(&blob, Bytes::from_static(b"12345")).await.unwrap();
        assert!(cached.get(&tag).await.unwrap_err().is_not_found());
        assert!(cached.head(&blob).await.unwrap_err().is_not_found());

        // Written through it: seen at once.
        cached.put(&tag, Bytes::from_static(b"sha256:bb")).await.unwrap();
        assert_eq!(&cached.get(&tag).await.unwrap()[..], b"sha256:bb");
        cached.delete_prefix(layout::blobs_root().as_str()).await.unwrap();
        assert!(cached.head(&blob).await.unwrap_err().is_not_found());
        cached.put(&blob, Bytes::from_static(b"123")).await.unwrap();
        assert_eq!(cached.head(&blob).await.unwrap().size, 3);

        // Moved and deleted through it.
        cached.put("staged", Bytes::from_static(b"1234567")).await.unwrap();
        cached.promote("staged", &blob).await.unwrap();
        assert_eq!(cached.head(&blob).await.unwrap().size, 7);
        cached.delete(&tag).await.unwrap();
        assert!(cached.get(&tag).await.unwrap_err().is_not_found());
    }

    #[tokio::test]
    async fn an_external_writer_is_seen_after_it_rewrites_the_marker() {
        let (_dir, fs, cached) = setup();
        let (tag, _) = keys();
        cached.revalidate().await.unwrap();
        assert!(cached.get(&tag).await.unwrap_err().is_not_found());
        fs.put(&tag, Bytes::from_static(b"sha256:aa")).await.unwrap();
        cached.revalidate().await.unwrap();
        assert!(cached.get(&tag).await.unwrap_err().is_not_found(), "marker unchanged");
        fs.put(layout::FS_EXTERNAL_WRITES, Bytes::from_static(b"1"))
            .await
            .unwrap();
        cached.revalidate().await.unwrap();
        assert_eq!(&cached.get(&tag).await.unwrap()[..], b"sha256:aa");
    }

    #[tokio::test]
    async fn a_read_racing_a_write_does_not_bring_back_the_old_answer() {
        let (_dir, _fs, cached) = setup();
        let (tag, _) = keys();
        // A read that began before a write ended...
        let epoch = cached.epoch();
        cached.put(&tag, Bytes::from_static(b"sha256:new")).await.unwrap();
        // ...offers what it read (the old absence) too late: refused.
        cached.remember(&tag, epoch, |e| e.get = Some(None));
        assert_eq!(&cached.get(&tag).await.unwrap()[..], b"sha256:new");
    }

    #[tokio::test]
    async fn small_blobs_are_served_from_memory_until_deleted() {
        let (_dir, fs, cached) = setup();
        let (_, blob) = keys();
        let read = |body: ObjectBody| match body {
            ObjectBody::Bytes(b) => b,
            _ => panic!("expected bytes from memory"),
        };
        cached.put(&blob, Bytes::from_static(b"0123456789")).await.unwrap();
        assert_eq!(cached.head(&blob).await.unwrap().size, 10);
        assert_eq!(&read(cached.open(&blob, Some(2..5)).await.unwrap())[..], b"234");
        // Gone from disk behind the cache's back: still served, so from memory.
        fs.delete_prefix(layout::blobs_root().as_str()).await.unwrap();
        assert_eq!(&read(cached.open(&blob, None).await.unwrap())[..], b"0123456789");
        assert!(matches!(
            cached.open(&blob, Some(5..11)).await,
            Err(StorageError::RangeNotSatisfiable { size: 10, .. })
        ));
        // Deleted through it: forgotten, bytes and all.
        cached.delete_prefix(layout::blobs_root().as_str()).await.unwrap();
        assert!(matches!(cached.open(&blob, None).await, Err(StorageError::NotFound(_))));
        assert_eq!(cached.state.lock().unwrap().content_bytes, 0);

        // A big blob is opened as a file every time.
        let big = Bytes::from(vec![7u8; SMALL_BLOB as usize + 1]);
        cached.put(&blob, big).await.unwrap();
        cached.head(&blob).await.unwrap();
        assert!(matches!(
            cached.open(&blob, None).await.unwrap(),
            ObjectBody::File { .. }
        ));
    }

    #[tokio::test]
    async fn other_keys_pass_through() {
        let (_dir, fs, cached) = setup();
        let upload = "docker/registry/v2/repositories/team/app/_uploads/u1";
        assert!(cached.head(upload).await.unwrap_err().is_not_found());
        fs.put(upload, Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(cached.head(upload).await.unwrap().size, 1);
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (_dir, _fs, cached) = setup();
        let n: RepoName = "team/app".parse().unwrap();
        for i in 0..MAX_ENTRIES + 10 {
            let t: Tag = format!("t{i}").parse().unwrap();
            let _ = cached.get(&layout::tag_current_link(&n, &t)).await;
        }
        assert!(cached.state.lock().unwrap().entries.len() <= MAX_ENTRIES);
    }
}
