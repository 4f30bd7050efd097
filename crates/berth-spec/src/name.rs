//! Repository names and tags, validated against the distribution spec's grammar.
//!
//! ```text
//! name      ::= component ("/" component)*
//! component ::= [a-z0-9]+ (separator [a-z0-9]+)*
//! separator ::= "." | "_" | "__" | "-"+
//! tag       ::= [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! ```

use std::fmt;
use std::str::FromStr;

/// Names longer than this are refused: distribution's limit, and a bound on path lengths.
pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} does not match the spec's grammar (lowercase components separated by '/')")]
    InvalidName(String),
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    // Must start and end with alphanumerics; separators are ".", "_", "__" or "-"+.
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when this name is `prefix` itself or lies below it (`prefix/...`).
    pub fn is_under(&self, prefix: &str) -> bool {
        self.0 == prefix
            || (self.0.len() > prefix.len() && self.0.starts_with(prefix) && self.0.as_bytes()[prefix.len()] == b'/')
    }
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<RepoName, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        if !s.split('/').all(is_component) {
            return Err(NameError::InvalidName(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Tag, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..].iter().all(|&c| c.is_ascii_alphanumeric() || b"._-".contains(&c));
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag(s.to_owned()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names() {
        for n in [
            "a",
            "library/alpine",
            "a/b/c/d/e/f",
            "my-app",
            "my--app",
            "my__app",
            "my_app",
            "v1.2",
            "0",
            "team/sub.team/app_x-y",
        ] {
            assert!(n.parse::<RepoName>().is_ok(), "{n} should be valid");
        }
    }

    #[test]
    fn invalid_names() {
        for n in [
            "", "A", "a/", "/a", "a//b", "-a", "a-", "a___b", "a..b", "a._b", "a/B", "a b", "a:b", "_a", "a.", "a/_/b",
        ] {
            assert!(n.parse::<RepoName>().is_err(), "{n:?} should be invalid");
        }
        let long = "a".repeat(256);
        assert_eq!(long.parse::<RepoName>(), Err(NameError::NameTooLong));
    }

    #[test]
    fn is_under() {
        let n: RepoName = "mirror/library/alpine".parse().unwrap();
        assert!(n.is_under("mirror"));
        assert!(n.is_under("mirror/library"));
        assert!(n.is_under("mirror/library/alpine"));
        assert!(!n.is_under("mirr"));
        assert!(!n.is_under("mirror/lib"));
    }

    #[test]
    fn tags() {
        for t in ["latest", "1.0", "_x", "A-b.c_d", &"a".repeat(128)] {
            assert!(t.parse::<Tag>().is_ok(), "{t}");
        }
        for t in ["", ".a", "-a", "a:b", "a/b", &"a".repeat(129)] {
            assert!(t.parse::<Tag>().is_err(), "{t}");
        }
    }
}
