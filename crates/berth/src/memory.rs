//! How the process uses the C allocator (glibc's malloc).
//!
//! Two opposite wishes: while bytes stream, freed buffers should be reused at
//! once instead of going back to the kernel and faulting in as fresh zeroed
//! pages on the next read; when the server is idle, its memory should go back.
//! [`tune`] keeps memory in the heap; [`spawn_trim`] hands it back now and then.

use std::time::Duration;

/// Keeps freed memory for reuse instead of handing it back to the kernel.
///
/// hyper reads request bodies into buffers of a few hundred KiB that are
/// freed as soon as their bytes are on disk. With glibc's defaults such
/// buffers are mmapped and unmapped, or trimmed off the heap, again and again,
/// so every received byte first faulted in a fresh zeroed page: 15% of a big
/// push's CPU went to `clear_page`. Fixed thresholds keep the memory in the
/// heap; the process's peak use (a few MiB per transfer in flight) bounds it.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Returns free heap memory, and the storage's free write buffers, to the kernel.
pub fn trim() {
    berth_storage::fs::release_free_buffers();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims every `every`, so that memory kept for reuse during a burst of
/// transfers goes back once the burst is over. Costs a few microseconds to a
/// millisecond per call; a transfer running meanwhile re-faults a few MiB.
pub fn spawn_trim(every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            trim();
        }
    })
}
