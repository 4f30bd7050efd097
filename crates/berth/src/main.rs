//! The `berth` executable.

use berth::cli::{Cli, Command};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => berth::app::run(args),
        Command::Import(args) => berth::import::run(args),
        Command::Export(args) => berth::export::run(args),
    }
}

/// Keeps freed memory for reuse instead of handing it back to the kernel.
///
/// hyper reads request bodies into buffers of a few hundred KiB that are
/// freed as soon as their bytes are on disk. With glibc's defaults such
/// buffers are mmapped and unmapped, or trimmed off the heap, again and again,
/// so every received byte first faulted in a fresh zeroed page: 15% of a big
/// push's CPU went to `clear_page`. Fixed thresholds keep the memory in the
/// heap; the process's peak use (a few MiB per transfer in flight) bounds it.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}
