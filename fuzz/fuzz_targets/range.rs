//! `Range` of blob GETs and `Content-Range` of upload chunks.
#![no_main]

use berth_spec::range::{parse_content_range, ByteRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, u64)| {
    let (header, size) = input;
    if let Some(range) = ByteRange::parse(header) {
        // A resolved range always lies inside the object and is not empty.
        if let Some(r) = range.resolve(size) {
            assert!(
                r.start < r.end && r.end <= size,
                "{header:?} on {size} bytes gave {r:?}"
            );
        }
    }
    if let Some((start, end)) = parse_content_range(header) {
        assert!(start <= end);
    }
});
