//! `Range` of blob GETs and `Content-Range` of upload chunks.
#![no_main]

use berth_spec::range::{parse_content_range, ByteRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    match ByteRange::parse(header) {
        // A resolved range always lies inside the object and is not empty.
        Ok(Some(range)) => {
            if let Some(r) = range.resolve(size) {
                assert!(
                    r.start < r.end && r.end <= size,
                    "{header:?} on {size} bytes gave {r:?}"
                );
            }
        }
        // Backwards (`bytes=9-1`): a bytes range with two numbers, the first larger.
        Err(_) => assert!(header.contains('-'), "{header:?}"),
        Ok(None) => {}
    }
    if let Some((start, end)) = parse_content_range(header) {
        assert!(start <= end);
    }
});
