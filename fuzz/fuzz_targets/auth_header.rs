//! `Authorization` headers: the scheme split and Basic credentials.
#![no_main]

use berth_http::auth::basic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Some((scheme, rest)) = basic::split_scheme(s) {
        assert!(!scheme.contains(' '));
        if let Some(c) = basic::parse(rest) {
            // What decodes is a user without `:` and a password.
            assert!(!c.user.is_empty() && !c.user.contains(':'));
        }
    }
});
