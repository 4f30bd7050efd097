//! The `WWW-Authenticate` header an upstream registry answers the mirror with.
#![no_main]

use berth_registry::proxy::parse_challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    // Never a panic; a Bearer challenge always names a realm.
    if let Some((realm, _service, _scope)) = parse_challenge(s) {
        assert!(!realm.is_empty());
    }
});
