//! Memory mapped straight from the kernel for big transfer buffers.
//!
//! Not from the heap: the process keeps freed heap memory for reuse
//! (`berth::memory`), and glibc's heaps (one per thread that allocated)
//! cannot give a buffer back while smaller allocations sit around it, so
//! buffers of MiB that come and go per request piled up in the peak RSS
//! (the fs upload buffers; the S3 multipart parts). A mapping is given back
//! whole when dropped.

use std::io;
use std::ptr::NonNull;

/// An anonymous mapping, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    pub(crate) len: usize,
}

// SAFETY: the mapping is owned by this value alone; it moves between tasks
// and threads (an upload's receiving task, its writer thread, a pool, an HTTP
// client sending it), and `&self` only ever reads it.
unsafe impl Send for Mapping {}

impl Mapping {
    pub(crate) fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping, no file or address involved.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable and writable for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, used by nobody else.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
