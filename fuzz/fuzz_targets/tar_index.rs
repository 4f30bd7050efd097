//! The tar index of image sources (`--source` archives): built from the
//! headers of an archive berth did not make.
#![no_main]

use berth_registry::sources::tar_index::TarIndex;
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut file = tempfile::NamedTempFile::new_in(scratch()).expect("a temporary file");
    file.write_all(data).expect("writing the input");
    let len = data.len() as u64;
    if let Ok(index) = TarIndex::open(file.path()) {
        // Every region it gives lies within the archive.
        for name in [
            "index.json",
            "manifest.json",
            "oci-layout",
            "blobs/sha256/a",
            "a",
            "../a",
            "/a",
        ] {
            if let Some(region) = index.get(name) {
                assert!(region.offset.saturating_add(region.len) <= len, "{name}: {region:?}");
            }
        }
    }
});

/// A RAM-backed directory when there is one: the target writes a file per input.
fn scratch() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}
