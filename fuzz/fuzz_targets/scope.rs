//! Token scopes (`repository:name:pull,push`), from `/token?scope=` and tokens' claims.
#![no_main]

use berth_http::auth::scope::Scope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    for scope in Scope::parse_all([s]) {
        // What parses prints as a scope that parses back to itself.
        let printed = scope.to_string();
        let again = Scope::parse(&printed).expect("a printed scope parses");
        assert_eq!(again.to_string(), printed);
    }
});
