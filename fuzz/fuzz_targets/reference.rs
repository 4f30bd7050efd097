//! Repository names, tags and references (tag or digest), as they come in paths
//! and query strings.
#![no_main]

use berth_spec::{Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    // What parses prints back as itself.
    if let Ok(name) = s.parse::<RepoName>() {
        assert_eq!(name.as_str(), s);
        let _ = name.is_under(s);
    }
    if let Ok(tag) = s.parse::<Tag>() {
        assert_eq!(tag.to_string(), s);
    }
    if let Ok(reference) = s.parse::<Reference>() {
        assert_eq!(reference.to_string(), s);
    }
});
