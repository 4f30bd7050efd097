//! htpasswd files: any text parses to a table and a list of problems.
#![no_main]

use berth_http::auth::htpasswd::UserTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let (table, problems) = UserTable::parse(s);
    // Every line is a user, a problem, blank or a comment: never more users than lines.
    assert!(table.len() + problems.len() <= s.lines().count());
});
