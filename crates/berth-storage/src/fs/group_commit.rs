//! Group commit: one `syncfs` makes the writes of every request waiting on it
//! durable, instead of each request flushing its own files.
//!
//! A small push is a handful of tiny writes (the data, the repository link,
//! two renames) and each fsync of them costs a device cache flush plus the
//! synchronous writes of the file's inode and of every newly created parent
//! directory. Measured on the reference machine, a 1 KiB push cost 17 device
//! writes and 3.4 flushes, and 8 concurrent pushes were bounded by those
//! round trips, not by the CPU. `syncfs` writes everything dirty on the
//! filesystem and flushes once, so N pushes waiting together pay one flush
//! and share the writes of the directory and inode-table blocks they touch.
//!
//! The rule that makes it correct is the one of database group commit: a
//! caller's writes are done before it joins the queue, and it is released only
//! by a `syncfs` that *started* after it joined. Callers arriving while one
//! runs wait for the next, which takes them all.
//!
//! The price is isolation: `syncfs` also writes out whatever other processes
//! left dirty on the same filesystem, so a registry sharing its filesystem with
//! a heavy writer can see its pushes wait for that writer's data. Such setups
//! choose the per-file mode ([`super::SyncMode::PerFile`]), as do data
//! directories spanning several mounts: `syncfs` covers the filesystem of the
//! data directory's root only.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

/// The outcome of one `syncfs`, shared by every caller it released.
type Outcome = Result<(), (io::ErrorKind, String)>;

pub(super) struct GroupCommit {
    root: PathBuf,
    /// A descriptor on the filesystem, opened at the first commit (the root
    /// may not exist before the first write). Kept open so that `syncfs`
    /// reports writeback errors that happened since the previous call
    /// (Linux 5.8+ tracks them per open file).
    fd: OnceLock<File>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A thread is running commits; new callers only queue.
    running: bool,
    waiting: Vec<oneshot::Sender<Outcome>>,
}

impl GroupCommit {
    pub(super) fn new(root: PathBuf) -> GroupCommit {
        GroupCommit {
            root,
            fd: OnceLock::new(),
            state: Mutex::default(),
        }
    }

    /// Returns once everything this caller wrote before calling is durable.
    pub(super) async fn commit(self: &Arc<Self>) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.state.lock().unwrap();
            state.waiting.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.run());
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, message))) => Err(io::Error::new(kind, message)),
            Err(_) => Err(io::Error::other("the commit thread stopped")),
        }
    }

    /// Commits until nobody waits: each round takes everyone queued so far.
    fn run(&self) {
        loop {
            let batch = {
                let mut state = self.state.lock().unwrap();
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let outcome = self.sync_filesystem().map_err(|e| (e.kind(), e.to_string()));
            for waiter in batch {
                let _ = waiter.send(outcome.clone());
            }
        }
    }

    fn sync_filesystem(&self) -> io::Result<()> {
        let fd = match self.fd.get() {
            Some(fd) => fd,
            None => {
                let file = File::open(&self.root)?;
                self.fd.get_or_init(|| file)
            }
        };
        // SAFETY: syncfs only reads the descriptor, which `fd` keeps open.
        if unsafe { libc::syncfs(fd.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_callers_are_all_released() {
        let dir = tempfile::tempdir().unwrap();
        let gc = Arc::new(GroupCommit::new(dir.path().to_owned()));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let gc = gc.clone();
                let path = dir.path().join(format!("f{i}"));
                tokio::spawn(async move {
                    std::fs::write(&path, b"x").unwrap();
                    gc.commit().await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // The thread answers the last batch, then finds no one waiting and
        // stops: soon after the last answer, not necessarily before it is read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while gc.state.lock().unwrap().running && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!gc.state.lock().unwrap().running, "the thread stops when nobody waits");
        // And starts again for the next caller.
        gc.commit().await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_root_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let gc = Arc::new(GroupCommit::new(dir.path().join("absent")));
        assert_eq!(gc.commit().await.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
