//! The filesystem backend: keys are paths below a root directory.
//!
//! Durability: every `put` writes a temporary file (in `layout::FS_TEMP`, one
//! directory for all, so that sweeping what a crash left costs one listing),
//! makes it durable, renames it over the target and makes the rename durable;
//! `promote` renames and makes the rename durable; an `AppendWriter` makes its
//! bytes durable on `finish`. Bytes are always durable before the rename that
//! publishes them, so a crash never leaves a name pointing at torn bytes.
//! "Durable" is per file (fdatasync, fsync of the directory) or, by default,
//! a group commit shared by every request waiting at the same moment (see
//! [`group_commit`]). Temporary files start with `.tmp-` and are never read as data.

mod append;
pub use append::release_free_buffers;
mod group_commit;
mod lock;

pub use lock::{DataDirLock, LockError};

use crate::backend::{AppendWriter, Backend, ObjectBody, ObjectMeta, Result, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How the backend makes writes durable before it reports them done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// One `syncfs` for all requests waiting at the same moment: the fewest
    /// device flushes, at the cost of also writing out what other processes
    /// left dirty on the same filesystem.
    #[default]
    Grouped,
    /// fdatasync of each file and fsync of each directory it was renamed
    /// into: isolated from other writers, one flush or more per write.
    PerFile,
}

/// Where durability comes from: this backend's own fsyncs or a group commit.
#[derive(Clone)]
enum Syncer {
    PerFile,
    Grouped(Arc<group_commit::GroupCommit>),
}

impl Syncer {
    fn per_file(&self) -> bool {
        matches!(self, Syncer::PerFile)
    }

    /// Makes what the caller wrote so far durable (nothing to do per file:
    /// the writes synced themselves).
    async fn commit(&self, key: &str) -> Result<()> {
        match self {
            Syncer::PerFile => Ok(()),
            Syncer::Grouped(group) => group.commit().await.map_err(|e| StorageError::io(key, e)),
        }
    }
}

#[derive(Clone)]
pub struct FsBackend {
    root: Arc<PathBuf>,
    sync: Syncer,
}

impl std::fmt::Debug for FsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBackend")
            .field("root", &self.root)
            .field("per_file_sync", &self.sync.per_file())
            .finish()
    }
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> FsBackend {
        FsBackend::with_sync(root, SyncMode::default())
    }

    pub fn with_sync(root: impl Into<PathBuf>, mode: SyncMode) -> FsBackend {
        let root: PathBuf = root.into();
        let sync = match mode {
            SyncMode::PerFile => Syncer::PerFile,
            SyncMode::Grouped => Syncer::Grouped(Arc::new(group_commit::GroupCommit::new(root.clone()))),
        };
        FsBackend {
            root: Arc::new(root),
            sync,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes what deletes interrupted by a crash left in the trash (see
    /// `delete_prefix`); returns how many trees. Safe while the backend is in
    /// use: the trash dir itself stays, and a delete finding its tree already
    /// gone is done.
    pub async fn sweep_trash(&self) -> Result<usize> {
        let trash = self.root.join(crate::layout::FS_TRASH);
        blocking(move || {
            let entries = match fs::read_dir(&trash) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(StorageError::io(crate::layout::FS_TRASH, e)),
            };
            let mut removed = 0;
            for entry in entries {
                let entry = entry.map_err(|e| StorageError::io(crate::layout::FS_TRASH, e))?;
                match fs::remove_dir_all(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StorageError::io(crate::layout::FS_TRASH, e)),
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Removes the temporary files that writes interrupted by a crash left in
    /// `layout::FS_TEMP`. Only files older than `older_than` go: a live write
    /// holds its temporary file for one write and a sync or two. Returns how
    /// many files.
    pub async fn sweep_temp_files(&self, older_than: std::time::Duration) -> Result<usize> {
        let dir = self.root.join(crate::layout::FS_TEMP);
        blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                Err(e) => return Err(StorageError::io(crate::layout::FS_TEMP, e)),
            };
            let now = std::time::SystemTime::now();
            let mut removed = 0;
            for entry in entries.flatten() {
                if is_stale(&entry, now, older_than) && fs::remove_file(entry.path()).is_ok() {
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Removes the temporary files (`.tmp-*`) that berth before
    /// `layout::FS_TEMP` wrote beside their targets and a crash left there,
    /// with the directories that only they kept alive (an interrupted tag
    /// write left `tags/<tag>/index/.../.tmp-*` and nothing else). Walks the
    /// whole data directory on a blocking thread, once: when the walk leaves
    /// no such file behind (none younger than `older_than`), it writes
    /// `layout::FS_SCATTERED_TEMP_SWEPT` and later calls return at once.
    /// Returns how many files it removed.
    pub async fn sweep_scattered_temp_files(&self, older_than: std::time::Duration) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || {
            let marker = root.join(crate::layout::FS_SCATTERED_TEMP_SWEPT);
            if marker.exists() || !root.exists() {
                return Ok(0);
            }
            let skip = [root.join(crate::layout::FS_TRASH), root.join(crate::layout::FS_TEMP)];
            let now = std::time::SystemTime::now();
            let (mut removed, mut left) = (0, 0);
            let mut dirs = vec![root.to_path_buf()];
            while let Some(dir) = dirs.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    // Gone since it was listed (a delete, or this sweep's own removal).
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => continue,
                    Err(e) => return Err(StorageError::io(&dir.display().to_string(), e)),
                };
                let mut emptied = false;
                for entry in entries.flatten() {
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else { continue };
                    if kind.is_dir() {
                        if !skip.contains(&path) {
                            dirs.push(path);
                        }
                        continue;
                    }
                    if !entry.file_name().as_encoded_bytes().starts_with(b".tmp-") {
                        continue;
                    }
                    if is_stale(&entry, now, older_than) && fs::remove_file(&path).is_ok() {
                        removed += 1;
                        emptied = true;
                    } else {
                        left += 1;
                    }
                }
                if emptied {
                    remove_empty_ancestors(&root, &dir);
                }
            }
            if left == 0 {
                write_atomic(&root, &marker, b"", false)
                    .map_err(|e| StorageError::io(crate::layout::FS_SCATTERED_TEMP_SWEPT, e))?;
            }
            Ok(removed)
        })
        .await
    }

    fn path(&self, key: &str) -> PathBuf {
        debug_assert!(
            !key.split('/').any(|c| c == ".." || c.is_empty()),
            "unsafe storage key {key:?}"
        );
        self.root.join(key)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StorageError::Io {
            key: String::new(),
            source: io::Error::other(e),
        }),
    }
}

/// Reads of small objects and metadata run on the calling thread: from the
/// page cache they take a few microseconds, while a trip through the blocking
/// pool (wake a thread, two context switches) costs more than the request
/// itself and dominated profiles of manifest and small-blob GETs. nginx makes
/// the same trade-off for open/stat.
async fn inline<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    f()
}

/// Removes `dir` and then its parents while they are empty, up to (not
/// including) `root`. A writer that created one of them and has not yet put
/// a file in it finds it gone and creates it again (see [`with_parent`]).
fn remove_empty_ancestors(root: &Path, dir: &Path) {
    let mut dir = dir;
    while dir != root && dir.starts_with(root) && fs::remove_dir(dir).is_ok() {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return,
        }
    }
}

/// Whether a directory entry was last modified more than `older_than` ago.
fn is_stale(entry: &fs::DirEntry, now: std::time::SystemTime, older_than: std::time::Duration) -> bool {
    entry
        .metadata()
        .and_then(|m| m.modified())
        .map(|t| now.duration_since(t).is_ok_and(|age| age > older_than))
        .unwrap_or(false)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_parent(path: &Path) -> io::Result<&Path> {
    let parent = path.parent().expect("storage paths have a parent");
    fs::create_dir_all(parent)?;
    Ok(parent)
}

/// How often an operation is retried when a concurrent `delete_prefix`
/// removes the directory it has just created (removing an emptied tag or
/// upload directory while another request writes into it is normal).
const PARENT_RETRIES: usize = 10;

/// Runs `op` after creating `path`'s parent, again if the parent vanished meanwhile.
fn with_parent<T>(path: &Path, mut op: impl FnMut(&Path) -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match create_parent(path).and_then(&mut op) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < PARENT_RETRIES => {
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// Atomic write: temp file, fsync, rename, fsync directory (the syncs only
/// when `durable`).
fn write_atomic(root: &Path, path: &Path, data: &[u8], durable: bool) -> io::Result<()> {
    let tmp = write_temp(root, data, durable)?;
    publish(&tmp, path, durable)
}

/// Writes `data` to a new file in `layout::FS_TEMP` of `root`, and returns its path.
fn write_temp(root: &Path, data: &[u8], durable: bool) -> io::Result<PathBuf> {
    let dir = root.join(crate::layout::FS_TEMP);
    let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut file = match File::create(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&dir)?;
            File::create(&tmp)?
        }
        r => r?,
    };
    let result = file.write_all(data).and_then(|()| match durable {
        true => file.sync_data(),
        false => Ok(()),
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| tmp)
}

/// Renames a temporary file over `path`, creating `path`'s parent directories
/// when they are missing (again if a concurrent `delete_prefix` removes them
/// meanwhile: removing an emptied tag or upload directory while another
/// request writes into it is normal); with `durable`, fsyncs the directory.
fn publish(tmp: &Path, path: &Path, durable: bool) -> io::Result<()> {
    let mut attempt = 0;
    let result = loop {
        match fs::rename(tmp, path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < PARENT_RETRIES => {
                attempt += 1;
                // Creating the parents races the delete too (a directory made
                // a moment ago may be gone before its child is made): that is
                // one more attempt, not a failure.
                match create_parent(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => break Err(e),
                    _ => {}
                }
            }
            r => break r,
        }
    };
    let result = result.and_then(|()| match durable {
        true => match sync_dir(path.parent().expect("storage paths have a parent")) {
            // A concurrent `delete_prefix` took the directory after the
            // rename: the write happened and the delete came after it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        false => Ok(()),
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

#[async_trait]
impl Backend for FsBackend {
    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        let key = key.to_owned();
        inline(move || fs::read(&path).map(Bytes::from).map_err(|e| StorageError::io(&key, e))).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key);
        let key = key.to_owned();
        inline(move || {
            let m = fs::metadata(&path).map_err(|e| StorageError::io(&key, e))?;
            if m.is_dir() {
                return Err(StorageError::NotFound(key));
            }
            Ok(ObjectMeta {
                size: m.len(),
                modified: m.modified().ok(),
            })
        })
        .await
    }

    async fn open(&self, key: &str, range: Option<Range<u64>>) -> Result<ObjectBody> {
        let path = self.path(key);
        let key = key.to_owned();
        inline(move || {
            let file = File::open(&path).map_err(|e| StorageError::io(&key, e))?;
            let size = file.metadata().map_err(|e| StorageError::io(&key, e))?.len();
            let range = range.unwrap_or(0..size);
            if range.start > range.end || range.end > size {
                return Err(StorageError::RangeNotSatisfiable {
                    key,
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
            Ok(ObjectBody::File {
                file,
                offset: range.start,
                len: range.end - range.start,
            })
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key);
        let owned = key.to_owned();
        let root = self.root.clone();
        if self.sync.per_file() {
            return blocking(move || write_atomic(&root, &path, &data, true).map_err(|e| StorageError::io(&owned, e)))
                .await;
        }
        // Two commits: the bytes must be durable before the rename that
        // publishes them, or a crash could leave the key holding torn bytes
        // (for a tag, losing the old value as well as the new).
        let tmp = blocking(move || write_temp(&root, &data, false).map_err(|e| StorageError::io(&owned, e))).await?;
        if let Err(e) = self.sync.commit(key).await {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // One rename, on this thread: cheaper than another trip to the blocking pool.
        publish(&tmp, &path, false).map_err(|e| StorageError::io(key, e))?;
        self.sync.commit(key).await
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let path = self.path(key);
        let owned = key.to_owned();
        let root = self.root.clone();
        // A hard link, unlike a rename, refuses to replace its target: the
        // file appears whole (written and synced first) or not at all.
        blocking(move || {
            let tmp = write_temp(&root, &data, true).map_err(|e| StorageError::io(&owned, e))?;
            let linked = with_parent(&path, |_| fs::hard_link(&tmp, &path));
            let _ = fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    sync_dir(path.parent().expect("storage paths have a parent"))
                        .map_err(|e| StorageError::io(&owned, e))?;
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(StorageError::io(&owned, e)),
            }
        })
        .await
    }

    async fn put_ephemeral(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key);
        let key = key.to_owned();
        let root = self.root.clone();
        blocking(move || write_atomic(&root, &path, &data, false).map_err(|e| StorageError::io(&key, e))).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        let key = key.to_owned();
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StorageError::io(&key, e)),
        })
        .await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let path = self.path(prefix);
        let trash = self.root.join(crate::layout::FS_TRASH);
        let key = prefix.to_owned();
        // The tree is first renamed into the trash, which takes it away from
        // every path at once: a write racing the delete either finished before
        // (and goes with the tree) or finds its directory gone and writes again
        // into a new one (after the delete). Removing in place instead lost
        // races to writers that kept adding entries while it emptied the tree,
        // once a grouped commit kept their temporary files there for milliseconds.
        blocking(move || {
            let moved = trash.join(uuid::Uuid::new_v4().simple().to_string());
            let result = fs::create_dir_all(&trash).and_then(|()| fs::rename(&path, &moved));
            match result {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(()),
                Err(e) => return Err(StorageError::io(&key, e)),
            }
            // The delete is done: the tree is out of every path. Emptying it
            // can still race a writer whose path lookup passed through the
            // tree just before the rename (the kernel then creates its entry
            // in the moved directory), which makes a removal fail with
            // "directory not empty". A few tries, then the trash keeps it for
            // the next start's sweep: never a failed delete.
            for attempt in 1..=3 {
                match fs::remove_dir_all(&moved) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(e) if attempt == 3 => {
                        tracing::warn!(key = %key, error = %e, "a deleted tree stays in the trash until the next start");
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix);
        let key = prefix.to_owned();
        blocking(move || Ok(listed(&path, &key)?.into_iter().map(|(name, _)| name).collect())).await
    }

    async fn list_keys_after(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let dir = self.path(prefix);
        let key = prefix.to_owned();
        let start_after = start_after.map(str::to_owned);
        blocking(move || {
            let mut names: Vec<String> = listed(&dir, &key)?
                .into_iter()
                .filter(|(name, is_file)| *is_file && start_after.as_deref().is_none_or(|s| name.as_str() > s))
                .map(|(name, _)| name)
                .collect();
            names.sort_unstable();
            names.truncate(limit);
            Ok(names)
        })
        .await
    }

    async fn append(&self, key: &str, offset: u64) -> Result<Box<dyn AppendWriter>> {
        // The file is opened by the writer's first trip to a blocking thread
        // (for a small upload, the one that also writes and syncs it), so the
        // offset check surfaces from `write` or `finish`.
        Ok(Box::new(append::FsAppendWriter::new(
            key.to_owned(),
            self.path(key),
            offset,
            self.sync.clone(),
        )))
    }

    async fn promote(&self, from: &str, to: &str) -> Result<()> {
        let src = self.path(from);
        let dst = self.path(to);
        let owned = to.to_owned();
        let per_file = self.sync.per_file();
        blocking(move || {
            with_parent(&dst, |parent| {
                fs::rename(&src, &dst)?;
                match per_file {
                    true => sync_dir(parent),
                    false => Ok(()),
                }
            })
            .map_err(|e| StorageError::io(&owned, e))
        })
        .await?;
        self.sync.commit(to).await
    }
}

/// The entries of directory `path` (storage key `key`) with whether each is
/// a file, leaving out temporary files; none when it does not exist.
fn listed(path: &Path, key: &str) -> Result<Vec<(String, bool)>> {
    let entries = match fs::read_dir(path) {
        Ok(e) => e,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(Vec::new()),
        Err(e) => return Err(StorageError::io(key, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(key, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.starts_with(".tmp-") {
            let is_file = entry.file_type().map_err(|e| StorageError::io(key, e))?.is_file();
            names.push((name, is_file));
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::append::WRITE_BATCH;
    use super::*;
    use std::io::Read;
    use std::io::{Seek, SeekFrom};

    fn backend() -> (tempfile::TempDir, FsBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::new(dir.path());
        (dir, b)
    }

    #[tokio::test]
    async fn put_get_head_delete() {
        let (_d, b) = backend();
        assert!(b.get("a/b").await.unwrap_err().is_not_found());
        b.put("a/b", Bytes::from_static(b"hello")).await.unwrap();
        b.put("a/b", Bytes::from_static(b"world!")).await.unwrap();
        assert_eq!(&b.get("a/b").await.unwrap()[..], b"world!");
        b.put_ephemeral("a/e", Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(&b.get("a/e").await.unwrap()[..], b"x");
        b.delete("a/e").await.unwrap();
        assert_eq!(b.head("a/b").await.unwrap().size, 6);
        assert!(b.head("a").await.unwrap_err().is_not_found());
        assert_eq!(b.list("a").await.unwrap(), vec!["b".to_string()]);
        b.delete("a/b").await.unwrap();
        b.delete("a/b").await.unwrap();
        assert!(b.list("a").await.unwrap().is_empty());
        assert!(b.list("nope").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_ranges() {
        let (_d, b) = backend();
        b.put("x", Bytes::from_static(b"0123456789")).await.unwrap();
        match b.open("x", Some(2..5)).await.unwrap() {
            ObjectBody::File { mut file, offset, len } => {
                assert_eq!((offset, len), (2, 3));
                file.seek(SeekFrom::Start(offset)).unwrap();
                let mut s = vec![0; len as usize];
                file.read_exact(&mut s).unwrap();
                assert_eq!(s, b"234");
            }
            _ => panic!("fs gives files"),
        }
        assert!(matches!(
            b.open("x", Some(5..11)).await,
            Err(StorageError::RangeNotSatisfiable { .. })
        ));
    }

    #[tokio::test]
    async fn append_writes_many_small_chunks_in_order() {
        let (_d, b) = backend();
        let mut w = b.append("up/many", 0).await.unwrap();
        let mut expect = Vec::new();
        // More chunks than one writev takes, crossing several batches.
        for i in 0..3000u32 {
            let chunk = vec![(i % 251) as u8; 1 + (i as usize * 7) % 1500];
            expect.extend_from_slice(&chunk);
            w.write(Bytes::from(chunk)).await.unwrap();
        }
        w.write(Bytes::new()).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), expect.len() as u64);
        assert_eq!(&b.get("up/many").await.unwrap()[..], &expect[..]);
    }

    #[tokio::test]
    async fn append_checks_offset_and_promotes() {
        let (_d, b) = backend();
        let mut w = b.append("up/data", 0).await.unwrap();
        w.write(Bytes::from(vec![1u8; WRITE_BATCH + 10])).await.unwrap();
        w.write(Bytes::from_static(b"abc")).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), WRITE_BATCH as u64 + 13);
        // A wrong offset fails before anything is written, whether it shows
        // when appending starts, with the first batch or at the finish.
        for chunk in [0, 2 * WRITE_BATCH] {
            let err = match b.append("up/data", 5).await {
                Err(e) => e,
                Ok(mut w) => match w.write(Bytes::from(vec![2u8; chunk])).await {
                    Err(e) => e,
                    Ok(()) => w.finish().await.unwrap_err(),
                },
            };
            assert!(
                matches!(err, StorageError::OffsetMismatch { actual, .. } if actual == WRITE_BATCH as u64 + 13),
                "{err}"
            );
        }
        // A missing object at a non-zero offset is not found (a purged upload).
        let err = match b.append("up/gone", 7).await {
            Err(e) => e,
            Ok(w) => w.finish().await.unwrap_err(),
        };
        assert!(err.is_not_found(), "{err}");
        let mut w = b.append("up/data", WRITE_BATCH as u64 + 13).await.unwrap();
        w.write(Bytes::from_static(b"de")).await.unwrap();
        w.finish().await.unwrap();
        b.promote("up/data", "blobs/x/data").await.unwrap();
        let data = b.get("blobs/x/data").await.unwrap();
        assert_eq!(data.len(), WRITE_BATCH + 15);
        assert_eq!(&data[data.len() - 5..], b"abcde");
        assert!(b.head("up/data").await.unwrap_err().is_not_found());
    }

    /// Writes into a directory that a concurrent `delete_prefix` keeps removing
    /// never fail, and neither do the deletes, in both sync modes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn writes_survive_a_concurrent_delete_prefix() {
        for mode in [SyncMode::Grouped, SyncMode::PerFile] {
            let dir = tempfile::tempdir().unwrap();
            writes_and_deletes_race(FsBackend::with_sync(dir.path(), mode)).await;
        }
    }

    async fn writes_and_deletes_race(b: FsBackend) {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deleter = {
            let (b, stop) = (b.clone(), stop.clone());
            tokio::spawn(async move {
                // Deletes now and then, as tag deletes and cancelled uploads do, not in a tight loop.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    b.delete_prefix("t/x").await.unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            })
        };
        for i in 0..200 {
            b.put(&format!("t/x/{i}/current/link"), Bytes::from_static(b"d"))
                .await
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        deleter.await.unwrap();
    }

    /// Both sync modes keep the same contract; the grouped one is the default
    /// the other tests use.
    #[tokio::test]
    async fn per_file_sync_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::with_sync(dir.path(), SyncMode::PerFile);
        assert!(b.sync.per_file() && !FsBackend::new(dir.path()).sync.per_file());
        b.put("t/link", Bytes::from_static(b"one")).await.unwrap();
        b.put("t/link", Bytes::from_static(b"two")).await.unwrap();
        assert_eq!(&b.get("t/link").await.unwrap()[..], b"two");
        for size in [10, WRITE_BATCH + 10] {
            let mut w = b.append("up/x", 0).await.unwrap();
            w.write(Bytes::from(vec![3u8; size])).await.unwrap();
            assert_eq!(w.finish().await.unwrap(), size as u64);
            b.promote("up/x", "blobs/x").await.unwrap();
            assert_eq!(b.head("blobs/x").await.unwrap().size, size as u64);
        }
        assert!(b.list("t").await.unwrap() == vec!["link".to_string()]);
    }

    /// A tree a crash left in the trash is swept; deletes go on working.
    #[tokio::test]
    async fn the_trash_is_swept() {
        let (d, b) = backend();
        assert_eq!(b.sweep_trash().await.unwrap(), 0);
        let left = d.path().join(crate::layout::FS_TRASH).join("crashed/tags/v1/current");
        fs::create_dir_all(&left).unwrap();
        fs::write(left.join("link"), b"sha256:...").unwrap();
        b.put("r/tags/v2/current/link", Bytes::from_static(b"d")).await.unwrap();
        b.delete_prefix("r/tags/v2").await.unwrap();
        assert_eq!(b.sweep_trash().await.unwrap(), 1);
        assert!(fs::read_dir(d.path().join(crate::layout::FS_TRASH))
            .unwrap()
            .next()
            .is_none());
        assert!(b.list("r/tags").await.unwrap().is_empty());
        b.delete_prefix("r/tags/absent").await.unwrap();
    }

    /// Writes leave nothing in the temp directory; what a crash left there is
    /// swept once it is old, a young file (a live write's) stays.
    #[tokio::test]
    async fn stale_temp_files_are_swept() {
        let (d, b) = backend();
        let hour = std::time::Duration::from_secs(3600);
        let old = std::time::SystemTime::now() - 2 * hour;
        b.put("r/_manifests/tags/t/current/link", Bytes::from_static(b"d"))
            .await
            .unwrap();
        b.put_ephemeral("r/_uploads/u/hashstate", Bytes::from_static(b"h"))
            .await
            .unwrap();
        let temp = d.path().join(crate::layout::FS_TEMP);
        assert_eq!(
            fs::read_dir(&temp).unwrap().count(),
            0,
            "a finished write leaves no temporary file"
        );
        File::create(temp.join(".tmp-crashed"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(temp.join(".tmp-live"), b"being written").unwrap();
        assert_eq!(b.sweep_temp_files(hour).await.unwrap(), 1);
        assert!(!temp.join(".tmp-crashed").exists());
        assert!(temp.join(".tmp-live").exists());
        assert_eq!(b.sweep_temp_files(hour).await.unwrap(), 0);
        let gone = FsBackend::new(d.path().join("absent"));
        assert_eq!(gone.sweep_temp_files(hour).await.unwrap(), 0);
    }

    /// What a crash in the middle of a tag write of an older berth left beside
    /// the tag is swept, with the directories only it kept; a young temporary
    /// file and everything else stay. Once nothing is left, the walk is
    /// marked done and not repeated.
    #[tokio::test]
    async fn scattered_temp_files_are_swept_once() {
        let (d, b) = backend();
        let hour = std::time::Duration::from_secs(3600);
        let old = std::time::SystemTime::now() - 2 * hour;
        let tag = d.path().join("r/_manifests/tags/broken/index/sha256/ab");
        fs::create_dir_all(&tag).unwrap();
        File::create(tag.join(".tmp-1")).unwrap().set_modified(old).unwrap();
        let half = d.path().join("r/_manifests/tags/half/current");
        fs::create_dir_all(&half).unwrap();
        File::create(half.join(".tmp-2")).unwrap().set_modified(old).unwrap();
        b.put("r/_manifests/tags/half/index/sha256/cd/link", Bytes::from_static(b"d"))
            .await
            .unwrap();
        let live = d.path().join("r/_manifests/tags/live/current");
        fs::create_dir_all(&live).unwrap();
        fs::write(live.join(".tmp-3"), b"being written").unwrap();
        b.put("r/_manifests/tags/good/current/link", Bytes::from_static(b"d"))
            .await
            .unwrap();
        File::open(d.path().join("r/_manifests/tags/good/current/link"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let trash = d.path().join(crate::layout::FS_TRASH).join("t");
        fs::create_dir_all(&trash).unwrap();
        File::create(trash.join(".tmp-4")).unwrap().set_modified(old).unwrap();

        assert_eq!(b.sweep_scattered_temp_files(hour).await.unwrap(), 2);
        let mut tags = b.list("r/_manifests/tags").await.unwrap();
        tags.sort();
        assert_eq!(tags, ["good", "half", "live"]);
        assert!(!half.exists(), "the emptied current/ goes, the rest of the tag stays");
        assert!(b.head("r/_manifests/tags/half/index/sha256/cd/link").await.is_ok());
        assert!(live.join(".tmp-3").exists());
        assert!(trash.join(".tmp-4").exists(), "the trash is swept on its own");
        let marker = d.path().join(crate::layout::FS_SCATTERED_TEMP_SWEPT);
        assert!(!marker.exists(), "a young file is left: the walk must come again");
        fs::remove_file(live.join(".tmp-3")).unwrap();
        assert_eq!(b.sweep_scattered_temp_files(hour).await.unwrap(), 0);
        assert!(marker.exists());
        // Marked: an old file that turns up now is not looked for.
        fs::create_dir_all(&tag).unwrap();
        File::create(tag.join(".tmp-5")).unwrap().set_modified(old).unwrap();
        assert_eq!(b.sweep_scattered_temp_files(hour).await.unwrap(), 0);
        assert!(tag.join(".tmp-5").exists());
        // Nothing to sweep in a data directory that does not exist yet.
        let gone = FsBackend::new(d.path().join("absent"));
        assert_eq!(gone.sweep_scattered_temp_files(hour).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn temp_files_are_invisible() {
        let (d, b) = backend();
        b.put("dir/real", Bytes::new()).await.unwrap();
        fs::write(d.path().join("dir/.tmp-crashed"), b"partial").unwrap();
        assert_eq!(b.list("dir").await.unwrap(), vec!["real".to_string()]);
    }
}
