//! Digests, from paths, query strings and manifests.
#![no_main]

use berth_spec::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(d) = s.parse::<Digest>() {
        // A digest prints as it was written and survives a round trip.
        assert_eq!(d.to_string(), s);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        let _ = d.hex();
    }
});
