//! One server per filesystem data directory. `--sync grouped` and every
//! in-process cache of what is stored assume no other process writes the
//! directory behind the server's back, so a second `berth serve` on the same
//! directory is refused, naming the process that holds it.
//!
//! The lock is flock(2) on `berth/v1/serve.lock`: the kernel releases it when
//! the holder exits, however it exits (kill -9 included), so there is never a
//! stale lock to clean up. The file holds the holder's PID for the message.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for as long as the server runs; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another berth (pid {pid}) is serving the data directory {dir}; stop it first, or give this one another --data"
    )]
    HeldBy { pid: String, dir: PathBuf },
    #[error("locking the data directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
}

impl DataDirLock {
    /// Takes the exclusive lock of the data directory `root`, or says who has it.
    pub fn acquire(root: &Path) -> Result<DataDirLock, LockError> {
        let io_err = |source| LockError::Io {
            dir: root.to_owned(),
            source,
        };
        let path = root.join(crate::layout::FS_SERVE_LOCK);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => "unknown".to_owned(),
                p => p.to_owned(),
            };
            return Err(LockError::HeldBy {
                pid,
                dir: root.to_owned(),
            });
        }
        // Ours now: record who we are for the next one to ask.
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        file.write_all(std::process::id().to_string().as_bytes())
            .map_err(io_err)?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in
        // the same process conflicts like another process would.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::HeldBy { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected HeldBy, got {other:?}"),
        }
        drop(first);
        let again = DataDirLock::acquire(dir.path()).expect("released when dropped");
        assert!(again.path().ends_with("berth/v1/serve.lock"));
    }
}
