//! Appending to a staged file (the data of a blob upload).
//!
//! A small upload (less than one buffer in this request) keeps the chunks as
//! they came from the network and writes them, with the fdatasync, in one trip
//! to a blocking thread when it finishes.
//!
//! A big one is pipelined: the receiving task copies the bytes into
//! page-aligned buffers and queues them for a writer thread of its own, which
//! writes them in order with `O_DIRECT`. Up to [`QUEUE`] full buffers wait for
//! it, so the device always has the next write ready while the task goes on
//! receiving (and the registry hashing): with one batch in flight the device
//! sat idle while the task finished the next batch, and 1 GiB pushes ran at
//! ~45% of the disk's direct-write rate. Writes stay sequential on one thread,
//! so the file is a prefix of what was sent at every moment (no holes after a
//! failed write or a kill -9), which resumable uploads rely on.
//!
//! Direct writes bypass the page cache: through it a byte costs a copy into a
//! freshly allocated page, then writeback, then the fdatasync; on the machines
//! measured that path moved 300-550 MB/s and was the larger half of a push's
//! CPU, while direct writes of 1 MiB moved 1-1.3 GB/s for a fraction of it.
//! The unaligned ends of a request go through the page cache. Filesystems
//! without `O_DIRECT` (tmpfs on old kernels, some FUSE mounts) get buffered
//! writes with early writeback.
//!
//! Durability does not depend on the path taken: `finish` fdatasyncs (or, for
//! a small request with grouped syncs, waits for a group commit), which also
//! flushes the device cache that direct writes may still sit in.

use super::{blocking, Syncer};
use crate::backend::{AppendWriter, Result, StorageError};
use crate::mapping::Mapping;
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Size of one buffer, and of one direct write. A request that brings less
/// stays off the pipeline. 1 MiB writes reach the device's rate (it is what
/// the disk baseline of `bench/compare.sh` writes).
pub(super) const WRITE_BATCH: usize = 1 << 20;

/// Full buffers that may wait for the writer thread. With one being filled
/// and one being written, an upload holds at most `QUEUE + 2` buffers.
const QUEUE: usize = 2;
const MAX_BUFFERS: usize = QUEUE + 2;

/// Offsets, lengths and buffer addresses of direct writes are multiples of
/// this. 4096 satisfies every block device (logical blocks of 512 or 4096).
const ALIGN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// Not tried yet on this file.
    Untried,
    /// The file descriptor currently has `O_DIRECT` set.
    On,
    /// The descriptor works buffered (again), direct writes are possible.
    Off,
    /// The filesystem refused `O_DIRECT`: buffered writes only.
    Unsupported,
}

/// The open staged file, positioned at its end.
struct FileIo {
    file: File,
    direct: Direct,
}

impl FileIo {
    /// Opens the file at `path` (creating it when the upload starts at 0) and
    /// checks that it holds exactly `offset` bytes. Runs on a blocking thread.
    fn open(key: &str, path: &std::path::Path, offset: u64) -> Result<FileIo> {
        let file = if offset == 0 {
            super::with_parent(path, |_| {
                OpenOptions::new().create(true).write(true).truncate(false).open(path)
            })
        } else {
            OpenOptions::new().write(true).open(path)
        };
        let mut file = file.map_err(|e| StorageError::io(key, e))?;
        // One writer at a time: a writer dropped mid-append (a client gone
        // mid-PATCH) may still have buffers queued for its thread, and the
        // next writer must see the size after them, not write over them. The
        // lock goes with the descriptor, when that thread is done.
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StorageError::io(key, io::Error::last_os_error()));
        }
        let actual = file.metadata().map_err(|e| StorageError::io(key, e))?.len();
        if actual != offset {
            return Err(StorageError::OffsetMismatch {
                key: key.to_owned(),
                expected: offset,
                actual,
            });
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| StorageError::io(key, e))?;
        Ok(FileIo {
            file,
            direct: Direct::Untried,
        })
    }

    /// Writes `buf[from..to]` at the file's current position, which is
    /// `base + from` with `base` block-aligned: the unaligned ends through the
    /// page cache, the whole blocks between them directly.
    fn write_span(&mut self, buf: &[u8], base: u64, mut from: usize, to: usize) -> io::Result<()> {
        debug_assert!(base.is_multiple_of(ALIGN as u64));
        let head_end = from.next_multiple_of(ALIGN).min(to);
        if head_end > from {
            self.set_direct(false)?;
            self.file.write_all(&buf[from..head_end])?;
            from = head_end;
        }
        let body_end = to / ALIGN * ALIGN;
        if body_end > from && self.set_direct(true)? {
            // `from` is a block boundary here, and so is the address of
            // `buf[from]` (the buffer starts on one).
            match self.file.write_all(&buf[from..body_end]) {
                Ok(()) => from = body_end,
                // Accepted by fcntl but not by the filesystem's write path
                // (stricter alignment, a FUSE mount): go on buffered from
                // wherever the direct writes stopped.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.set_direct(false)?;
                    self.direct = Direct::Unsupported;
                    from = (self.file.stream_position()? - base) as usize;
                }
                Err(e) => return Err(e),
            }
        }
        if to > from {
            self.set_direct(false)?;
            self.file.write_all(&buf[from..to])?;
            start_writeback(&self.file, base + from as u64, (to - from) as u64);
        }
        Ok(())
    }

    /// Switches `O_DIRECT` on or off. Returns whether the descriptor is now
    /// in the asked mode; a filesystem that refuses it is remembered.
    fn set_direct(&mut self, on: bool) -> io::Result<bool> {
        let want = if on { Direct::On } else { Direct::Off };
        match (self.direct, on) {
            (Direct::Unsupported, true) => return Ok(false),
            (Direct::Unsupported | Direct::Untried, false) => return Ok(true),
            (d, _) if d == want => return Ok(true),
            _ => {}
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: plain fcntl calls on a descriptor this struct owns.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_DIRECT
        } else {
            flags & !libc::O_DIRECT
        };
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
            let e = io::Error::last_os_error();
            if on && e.raw_os_error() == Some(libc::EINVAL) {
                self.direct = Direct::Unsupported;
                return Ok(false);
            }
            return Err(e);
        }
        self.direct = want;
        Ok(true)
    }
}

/// A page-aligned buffer mapped straight from the kernel. Not from the heap:
/// glibc keeps the top of a heap (and raises its mmap threshold after a big
/// free), so heap buffers of a few MiB per upload stayed in the idle server's
/// RSS after the uploads were over. A buffer of [`WRITE_BATCH`] goes back to
/// a small pool when dropped, for the next request: mapping fresh ones for
/// every PATCH meant faulting in and zeroing up to 4 MiB of new pages per
/// request (~15 % of a 5 MiB-chunked push's CPU). [`release_free_buffers`]
/// (the server's idle trim) returns the pool to the kernel. A reused buffer
/// holds an earlier request's bytes: only the span a job filled is written.
struct AlignedBuf {
    map: Option<Mapping>,
}

/// Free buffers kept between requests.
static FREE_BUFFERS: Mutex<Vec<Mapping>> = Mutex::new(Vec::new());

/// At most this many free buffers are kept (two uploads' worth).
const FREE_BUFFERS_KEPT: usize = 2 * MAX_BUFFERS;

/// Unmaps the free buffers kept for reuse (a few MiB after big pushes);
/// the next big request maps new ones.
pub fn release_free_buffers() {
    let free = std::mem::take(&mut *FREE_BUFFERS.lock().unwrap_or_else(|e| e.into_inner()));
    drop(free);
}

impl AlignedBuf {
    fn new(len: usize) -> io::Result<AlignedBuf> {
        if len == WRITE_BATCH {
            if let Some(map) = FREE_BUFFERS.lock().unwrap_or_else(|e| e.into_inner()).pop() {
                return Ok(AlignedBuf { map: Some(map) });
            }
        }
        Ok(AlignedBuf {
            map: Some(Mapping::new(len)?),
        })
    }

    fn as_slice(&self) -> &[u8] {
        self.map.as_ref().expect("mapped until dropped").as_slice()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut().expect("mapped until dropped").as_mut_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        if map.len == WRITE_BATCH {
            let mut free = FREE_BUFFERS.lock().unwrap_or_else(|e| e.into_inner());
            if free.len() < FREE_BUFFERS_KEPT {
                free.push(map);
                return;
            }
        }
        // Unmapped here, outside the pool's lock.
        drop(map);
    }
}

/// One buffer's worth of the file: `buf[from..to]` belongs at file offset
/// `base + from`. `base` is block-aligned; only an upload's first buffer
/// starts at `from > 0` (the offset where this request starts).
struct Job {
    buf: AlignedBuf,
    base: u64,
    from: usize,
    to: usize,
}

enum Message {
    Write(Job),
    /// Everything is queued: fdatasync and stop.
    Finish,
}

/// The writer thread of one big upload: opens the file, writes the queued
/// buffers in order and hands each back for reuse. Stops at the first error
/// (nothing after a failed write is written), or when the upload is dropped
/// without finishing (a client gone: what was queued is still written).
/// Returns whether it was told to finish (and synced).
fn run_writer(
    key: String,
    path: PathBuf,
    offset: u64,
    mut queue: mpsc::Receiver<Message>,
    free: mpsc::UnboundedSender<AlignedBuf>,
) -> Result<bool> {
    let mut io = FileIo::open(&key, &path, offset)?;
    while let Some(message) = queue.blocking_recv() {
        match message {
            Message::Write(job) => {
                io.write_span(job.buf.as_slice(), job.base, job.from, job.to)
                    .map_err(|e| StorageError::io(&key, e))?;
                // The receiving task may be gone (dropped mid-upload).
                let _ = free.send(job.buf);
            }
            Message::Finish => {
                io.file.sync_data().map_err(|e| StorageError::io(&key, e))?;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The receiving side of a big upload's pipeline.
struct Pipe {
    /// The buffer being filled (`None` only between two buffers).
    current: Option<Job>,
    queue: mpsc::Sender<Message>,
    free: mpsc::UnboundedReceiver<AlignedBuf>,
    allocated: usize,
    writer: JoinHandle<Result<bool>>,
}

impl Pipe {
    fn start(key: &str, path: PathBuf, offset: u64) -> Result<Pipe> {
        let base = offset / ALIGN as u64 * ALIGN as u64;
        let from = (offset - base) as usize;
        let buf = AlignedBuf::new(WRITE_BATCH).map_err(|e| StorageError::io(key, e))?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let (free_tx, free) = mpsc::unbounded_channel();
        let k = key.to_owned();
        let writer = tokio::task::spawn_blocking(move || run_writer(k, path, offset, rx, free_tx));
        Ok(Pipe {
            current: Some(Job {
                buf,
                base,
                from,
                to: from,
            }),
            queue,
            free,
            allocated: 1,
            writer,
        })
    }

    /// Copies `data` into buffers, queueing each one as it fills. Waits only
    /// when [`MAX_BUFFERS`] are in use, that is when the disk is behind.
    /// `Err(None)`: the writer thread stopped (its result tells why).
    async fn push(&mut self, key: &str, mut data: &[u8]) -> std::result::Result<(), Option<StorageError>> {
        while !data.is_empty() {
            let job = self.current.as_mut().expect("a buffer between pushes");
            let n = data.len().min(WRITE_BATCH - job.to);
            job.buf.as_mut_slice()[job.to..job.to + n].copy_from_slice(&data[..n]);
            job.to += n;
            data = &data[n..];
            if job.to == WRITE_BATCH {
                let next_base = job.base + WRITE_BATCH as u64;
                let buf = self.buffer(key).await?;
                let full = self.current.replace(Job {
                    buf,
                    base: next_base,
                    from: 0,
                    to: 0,
                });
                let full = full.expect("checked above");
                self.queue.send(Message::Write(full)).await.map_err(|_| None)?;
            }
        }
        Ok(())
    }

    /// A buffer given back by the writer, a new one while there are fewer
    /// than [`MAX_BUFFERS`], or else the next one the writer gives back.
    async fn buffer(&mut self, key: &str) -> std::result::Result<AlignedBuf, Option<StorageError>> {
        if let Ok(buf) = self.free.try_recv() {
            return Ok(buf);
        }
        if self.allocated < MAX_BUFFERS {
            self.allocated += 1;
            return AlignedBuf::new(WRITE_BATCH).map_err(|e| Some(StorageError::io(key, e)));
        }
        self.free.recv().await.ok_or(None)
    }

    /// Queues the last, partly filled buffer and waits until everything is
    /// written and synced.
    async fn finish(mut self, key: &str) -> Result<()> {
        let mut queued = true;
        if let Some(job) = self.current.take().filter(|j| j.to > j.from) {
            queued = self.queue.send(Message::Write(job)).await.is_ok();
        }
        if queued {
            // A send that fails means the writer stopped: its result says why.
            let _ = self.queue.send(Message::Finish).await;
        }
        drop(self.queue);
        match self.writer.await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(StorageError::io(
                key,
                io::Error::other("the upload's writer stopped early"),
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(StorageError::io(key, io::Error::other(e))),
        }
    }

    /// Why the writer thread stopped before the upload finished.
    async fn failure(self, key: &str) -> StorageError {
        drop(self.queue);
        match self.writer.await {
            Ok(Err(e)) => e,
            Ok(Ok(_)) => StorageError::io(key, io::Error::other("the upload's writer stopped early")),
            Err(e) => StorageError::io(key, io::Error::other(e)),
        }
    }
}

enum Stage {
    /// Less than a buffer so far: the chunks as received, not copied.
    Collecting {
        chunks: Vec<Bytes>,
        len: usize,
    },
    Piped(Pipe),
    /// A write failed; the error was returned.
    Failed,
}

pub(super) struct FsAppendWriter {
    key: String,
    path: PathBuf,
    /// The size when this writer started.
    start: u64,
    size: u64,
    stage: Stage,
    sync: Syncer,
}

impl FsAppendWriter {
    /// Appends to the file at `path`, which must hold exactly `offset` bytes.
    pub(super) fn new(key: String, path: PathBuf, offset: u64, sync: Syncer) -> FsAppendWriter {
        FsAppendWriter {
            key,
            path,
            start: offset,
            size: offset,
            stage: Stage::Collecting {
                chunks: Vec::new(),
                len: 0,
            },
            sync,
        }
    }

    /// Copies `data` into the pipeline; on failure the writer's error, once.
    async fn push_piped(&mut self, data: &[u8]) -> Result<()> {
        let Stage::Piped(pipe) = &mut self.stage else {
            unreachable!("called on a piped upload only");
        };
        match pipe.push(&self.key, data).await {
            Ok(()) => Ok(()),
            Err(early) => {
                let Stage::Piped(pipe) = std::mem::replace(&mut self.stage, Stage::Failed) else {
                    unreachable!("matched above");
                };
                let stopped = pipe.failure(&self.key).await;
                Err(early.unwrap_or(stopped))
            }
        }
    }
}

/// Writes every chunk, in order, with as few writev calls as the kernel
/// allows. Returns the number of bytes written.
fn write_all_vectored(file: &mut File, mut chunks: Vec<Bytes>) -> io::Result<u64> {
    use bytes::Buf;
    let total = chunks.iter().map(|c| c.len() as u64).sum();
    let mut first = 0;
    while first < chunks.len() {
        let slices: Vec<io::IoSlice<'_>> = chunks[first..]
            .iter()
            .take(512) // below IOV_MAX
            .map(|c| io::IoSlice::new(c))
            .collect();
        let mut n = match file.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let c = &mut chunks[first];
            if n >= c.len() {
                n -= c.len();
                first += 1;
            } else {
                c.advance(n);
                n = 0;
            }
        }
        while first < chunks.len() && chunks[first].is_empty() {
            first += 1;
        }
    }
    Ok(total)
}

/// Asks the kernel to start writing `start..start + len` to disk without
/// waiting for it, so that the fdatasync in `finish` only waits for the tail
/// instead of flushing the whole blob after the last byte arrived. Only an
/// optimisation: durability comes from fdatasync.
fn start_writeback(file: &File, start: u64, len: u64) {
    if len == 0 {
        return;
    }
    // SAFETY: the descriptor is open; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[async_trait]
impl AppendWriter for FsAppendWriter {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as u64;
        let chunks = match &mut self.stage {
            Stage::Piped(_) => return self.push_piped(&data).await,
            Stage::Failed => {
                return Err(StorageError::io(
                    &self.key,
                    io::Error::other("write after a failed write"),
                ))
            }
            Stage::Collecting { chunks, len } => {
                *len += data.len();
                chunks.push(data);
                if *len < WRITE_BATCH {
                    return Ok(());
                }
                std::mem::take(chunks)
            }
        };
        // A buffer's worth: from here on the upload is pipelined.
        self.stage = match Pipe::start(&self.key, self.path.clone(), self.start) {
            Ok(pipe) => Stage::Piped(pipe),
            Err(e) => {
                self.stage = Stage::Failed;
                return Err(e);
            }
        };
        for chunk in chunks {
            self.push_piped(&chunk).await?;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let chunks = match std::mem::replace(&mut self.stage, Stage::Failed) {
            // A pipelined request wrote a buffer or more and syncs its own
            // file even when syncs are grouped: its data is most of what there
            // is to write, and a group commit would make small pushes waiting
            // with it pay for it.
            Stage::Piped(pipe) => {
                pipe.finish(&self.key).await?;
                return Ok(self.size);
            }
            Stage::Collecting { chunks, .. } => chunks,
            Stage::Failed => {
                return Err(StorageError::io(
                    &self.key,
                    io::Error::other("finish after a failed write"),
                ))
            }
        };
        // The bytes and the fdatasync, if this request makes its own, share
        // one trip to a blocking thread.
        let own_sync = self.sync.per_file();
        let (key, path, start) = (self.key.clone(), self.path.clone(), self.start);
        blocking(move || {
            let mut io = FileIo::open(&key, &path, start)?;
            write_all_vectored(&mut io.file, chunks)
                .and_then(|_| match own_sync {
                    true => io.file.sync_data(),
                    false => Ok(()),
                })
                .map_err(|e| StorageError::io(&key, e))
        })
        .await?;
        if !own_sync {
            self.sync.commit(&self.key).await?;
        }
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use std::time::Duration;

    /// Deterministic bytes that differ at every offset of a few MiB.
    fn pattern(offset: usize, len: usize) -> Vec<u8> {
        (offset..offset + len)
            .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
            .collect()
    }

    fn backend(dir: &tempfile::TempDir) -> super::super::FsBackend {
        super::super::FsBackend::new(dir.path())
    }

    /// Sends `sizes` (chunk sizes) in one request starting where the file ends.
    async fn send(b: &super::super::FsBackend, expect: &mut Vec<u8>, sizes: &[usize]) {
        let mut w = b.append("up/data", expect.len() as u64).await.unwrap();
        for &size in sizes {
            let chunk = pattern(expect.len(), size);
            expect.extend_from_slice(&chunk);
            w.write(Bytes::from(chunk)).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), expect.len() as u64);
    }

    fn stored(dir: &tempfile::TempDir) -> Vec<u8> {
        std::fs::read(dir.path().join("up/data")).unwrap()
    }

    /// Uploads written in several requests at unaligned offsets, with chunks
    /// of odd sizes, come out byte for byte, whichever path each part took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mixed_direct_and_buffered_writes_keep_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        let mut expect = Vec::new();
        let mut seed = 7u32;
        for request in 0..4 {
            let mut sizes = Vec::new();
            let mut sent = 0;
            while sent < 2 * WRITE_BATCH + 12_345 * (request + 1) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let size = 1 + (seed >> 8) as usize % 70_000;
                sizes.push(size);
                sent += size;
            }
            send(&b, &mut expect, &sizes).await;
        }
        let stored = stored(&dir);
        assert_eq!(stored.len(), expect.len());
        assert!(stored == expect, "stored bytes differ");
    }

    /// Chunks and requests that end exactly on, one byte before and one byte
    /// after buffer and block boundaries; many buffers (more than the pool,
    /// so buffers are reused); a request of exactly one buffer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn boundaries_of_buffers_blocks_and_requests_keep_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        let mut expect = Vec::new();
        send(&b, &mut expect, &[WRITE_BATCH]).await;
        send(&b, &mut expect, &[WRITE_BATCH - 1, 1, 1, WRITE_BATCH - 2, ALIGN]).await;
        send(&b, &mut expect, &[ALIGN + 1, 3 * WRITE_BATCH - 1]).await;
        send(&b, &mut expect, &[WRITE_BATCH + 1; 7]).await;
        send(&b, &mut expect, &[1; 3]).await;
        send(&b, &mut expect, &[(MAX_BUFFERS + 3) * WRITE_BATCH + ALIGN - 1]).await;
        let stored = stored(&dir);
        assert_eq!(stored.len(), expect.len());
        assert!(stored == expect, "stored bytes differ");
    }

    /// A request dropped mid-way (a client gone) leaves a prefix of what it
    /// sent, whole buffers only, and the next request appends after it: the
    /// file lock makes it wait for the queued buffers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_request_leaves_whole_buffers_and_the_next_appends_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        let sent = pattern(0, 3 * WRITE_BATCH + WRITE_BATCH / 2);
        let mut w = b.append("up/data", 0).await.unwrap();
        for chunk in sent.chunks(100_000) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        drop(w);
        let mut expect = sent[..3 * WRITE_BATCH].to_vec();
        send(&b, &mut expect, &[WRITE_BATCH + 17]).await;
        assert!(stored(&dir) == expect, "stored bytes differ");
    }

    /// A write that fails on the writer thread (a full disk) fails the
    /// upload's `write` or `finish` with that error, promptly: no hang.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_fails_the_upload_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("up")).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("up/data")).unwrap();
        let b = backend(&dir);
        let upload = async {
            let mut w = b.append("up/data", 0).await?;
            for _ in 0..(MAX_BUFFERS + 4) * 4 {
                w.write(Bytes::from(vec![1u8; WRITE_BATCH / 4])).await?;
            }
            w.finish().await
        };
        let result = tokio::time::timeout(Duration::from_secs(30), upload)
            .await
            .expect("the upload ended");
        match result {
            Err(StorageError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("expected ENOSPC, got {other:?}"),
        }
    }

    /// The stored size disagreeing with the upload's is found by the writer
    /// thread of a big request and reported as such.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_offset_is_reported_by_a_pipelined_request() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        let mut expect = Vec::new();
        send(&b, &mut expect, &[10]).await;
        let upload = async {
            let mut w = b.append("up/data", 20).await?;
            for _ in 0..(MAX_BUFFERS + 2) * 2 {
                w.write(Bytes::from(vec![1u8; WRITE_BATCH / 2])).await?;
            }
            w.finish().await
        };
        let result = tokio::time::timeout(Duration::from_secs(30), upload)
            .await
            .expect("the upload ended");
        assert!(
            matches!(
                result,
                Err(StorageError::OffsetMismatch {
                    expected: 20,
                    actual: 10,
                    ..
                })
            ),
            "{result:?}"
        );
        assert!(stored(&dir) == expect, "the file was not touched");
    }

    /// The direct path is taken where the filesystem allows it (the test
    /// directory is on the same filesystem as the data in CI and here).
    #[test]
    fn direct_writes_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        File::create(&path).unwrap();
        let mut io = FileIo::open("f", &path, 0).unwrap();
        let mut buf = AlignedBuf::new(WRITE_BATCH).unwrap();
        let data = pattern(0, 3 * ALIGN + 100);
        buf.as_mut_slice()[..data.len()].copy_from_slice(&data);
        io.write_span(buf.as_slice(), 0, 0, data.len()).unwrap();
        if io.direct != Direct::Unsupported {
            assert_eq!(io.direct, Direct::Off, "direct for the blocks, buffered for the tail");
        }
        io.file.sync_data().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
