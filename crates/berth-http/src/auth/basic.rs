//! `Authorization: Basic` credentials.

use base64::Engine;

/// A user name and password from a request. The password is never logged:
/// `Debug` leaves it out.
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Decodes the part of an `Authorization` header after `Basic `: base64 of
/// `user:password` (the password may hold `:`; the user may not).
pub fn parse(encoded: &str) -> Option<Credentials> {
    // Bounded so a huge header costs nothing to refuse.
    if encoded.len() > 4096 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    if user.is_empty() {
        return None;
    }
    Some(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// Splits an `Authorization` header into its scheme (lower-cased comparison
/// is the caller's) and its credentials.
pub fn split_scheme(header: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    Some((scheme, rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials() {
        let c = parse("YWxpY2U6czNjcjN0OndpdGg6Y29sb25z").unwrap(); // alice:s3cr3t:with:colons
        assert_eq!(c.user, "alice");
        assert_eq!(c.password, "s3cr3t:with:colons");
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(parse("bm9jb2xvbg==").is_none()); // nocolon
        assert!(parse("OnB3").is_none()); // :pw, no user
        assert!(parse("!!!").is_none());
        assert_eq!(split_scheme("Basic  abc "), Some(("Basic", "abc")));
        assert_eq!(split_scheme("Bearer"), None);
    }
}
