//! Zero-copy file responses through hyper.
//!
//! hyper's body API only carries bytes, so a file region cannot be handed to
//! the kernel directly. Instead, [`serve`](crate::serve) wraps every accepted
//! socket in a [`Conn`] and runs the connection inside a task-local
//! [`Regions`] queue. A file body ([`crate::body`]) that finds the queue pushes
//! its region there and yields placeholder frames that point into the static
//! [`PLACEHOLDER`] buffer, exactly as long as the region. hyper accounts for
//! them like any data (Content-Length, access log) and passes them to
//! `poll_write_vectored` in order; [`Conn`] recognises them by address and
//! sends the same number of bytes from the front region with sendfile(2)
//! instead. HTTP/1.1 writes responses in order, so regions are consumed in
//! the order they were queued. Without the task-local (the router used on its
//! own), file bodies fall back to reading the file.
//!
//! A page-cache miss blocks the runtime thread inside sendfile (as with
//! nginx's plain `sendfile on`). To keep that rare for cold blobs, the region
//! ahead of the socket is announced to the kernel with
//! posix_fadvise(WILLNEED) one window at a time, so the disk reads run
//! asynchronously ahead of the sendfile calls.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Placeholder frames are slices of this buffer; its bytes are never sent.
pub static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];
pub const PLACEHOLDER_LEN: usize = 1 << 20;

fn is_placeholder(buf: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    !buf.is_empty() && p >= start && p < start + PLACEHOLDER_LEN
}

pub struct Region {
    pub file: File,
    pub offset: u64,
    pub remaining: u64,
    /// Offset up to which read-ahead has been requested.
    pub prefetched: u64,
}

impl Region {
    pub fn new(file: File, offset: u64, len: u64) -> Region {
        Region {
            file,
            offset,
            remaining: len,
            prefetched: offset,
        }
    }

    /// Keeps at least half a window of requested read-ahead in front of `offset`.
    fn prefetch(&mut self) {
        let end = self.offset + self.remaining;
        if self.prefetched >= end || self.prefetched >= self.offset + PREFETCH_WINDOW / 2 {
            return;
        }
        let start = self.prefetched.max(self.offset);
        let len = PREFETCH_WINDOW.min(end - start);
        // SAFETY: the descriptor is open; the call only schedules reads.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                start as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
        self.prefetched = start + len;
    }
}

/// Read-ahead requested per posix_fadvise call.
const PREFETCH_WINDOW: u64 = 32 << 20;

/// File regions queued on one connection, in response order.
pub type Regions = Arc<Mutex<VecDeque<Region>>>;

tokio::task_local! {
    /// The regions of the connection whose task is running.
    pub static REGIONS: Regions;
}

/// An accepted socket whose placeholder writes become sendfile calls.
pub struct Conn {
    stream: TcpStream,
    regions: Regions,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            regions: Regions::default(),
        }
    }

    pub fn regions(&self) -> Regions {
        self.regions.clone()
    }

    /// Sends up to `max` bytes of the front region.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(region) = regions.front_mut() else {
            return Poll::Ready(Err(io::Error::other("placeholder bytes without a queued file region")));
        };
        let want = (max as u64).min(region.remaining) as usize;
        region.prefetch();
        let sock = self.stream.as_raw_fd();
        let file = region.file.as_raw_fd();
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            let mut off = region.offset as libc::off_t;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                // SAFETY: both descriptors are open for the duration of the call; `off` is a valid pointer.
                let n = unsafe { libc::sendfile(sock, file, &mut off, want) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                Ok(0) if want > 0 => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its response",
                    )))
                }
                Ok(n) => {
                    region.offset += n as u64;
                    region.remaining -= n as u64;
                    if region.remaining == 0 {
                        regions.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if is_placeholder(buf) {
            return self.poll_sendfile(cx, buf.len());
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Ordinary bytes up to the first placeholder go out with writev; a
        // leading placeholder goes out with sendfile. Short writes are normal.
        match bufs.iter().position(|b| is_placeholder(b)) {
            Some(0) => {
                // Consecutive placeholders go out in one call (it stops at the end of the front region).
                let run = bufs.iter().take_while(|b| is_placeholder(b)).map(|b| b.len()).sum();
                self.poll_sendfile(cx, run)
            }
            Some(i) => Pin::new(&mut self.stream).poll_write_vectored(cx, &bufs[..i]),
            None => Pin::new(&mut self.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // hyper then queues body frames instead of copying them into its buffer,
        // so placeholders reach us with their addresses intact.
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_by_address() {
        assert!(is_placeholder(&PLACEHOLDER[..10]));
        assert!(is_placeholder(&PLACEHOLDER[PLACEHOLDER_LEN - 1..]));
        assert!(!is_placeholder(&PLACEHOLDER[..0]));
        let zeros = vec![0u8; 16];
        assert!(!is_placeholder(&zeros));
    }
}
