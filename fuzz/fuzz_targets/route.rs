//! Request paths: the route parser reads every path from the right.
#![no_main]

use berth_http::route::{parse, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    // Whatever it finds must be a piece of the path, and parsing it again
    // must find the same thing.
    if let Some(route) = parse(path) {
        let again = parse(path).expect("a path parses every time");
        assert_eq!(format!("{route:?}"), format!("{again:?}"));
        let name = match route {
            Route::Base | Route::Catalog => "",
            Route::Tags { name }
            | Route::Referrers { name, .. }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. } => name,
        };
        assert!(path.contains(name));
    }
});
