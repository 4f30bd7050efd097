//! The `<reference>` of `/v2/<name>/manifests/<reference>`: a tag or a digest.

use crate::{Digest, DigestError, NameError, Tag};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Tag(#[from] NameError),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    /// A reference containing ':' can only be a digest, since tags may not contain one.
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_or_digest() {
        assert!(matches!("latest".parse(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse(),
            Ok(Reference::Digest(_))
        ));
        assert!(matches!(
            "sha256:nothex".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!("-bad".parse::<Reference>(), Err(ReferenceError::Tag(_))));
    }
}
