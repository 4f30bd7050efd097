//! Bearer tokens (JWTs) from `Authorization` headers: decoding a token of
//! an issuer berth trusts no key of never panics and never verifies.
#![no_main]

use berth_http::auth::token::trust::TrustStore;
use berth_http::auth::token::Verifier;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let verifier = Verifier::new("issuer".into(), "service".into(), TrustStore::default(), None);
    assert!(verifier.verify(s).is_err());
});
