//! Successful password checks, remembered for a while so that a client
//! sending Basic credentials with every request costs one bcrypt run, not one
//! per request (bcrypt takes 50-250 ms of CPU by design).
//!
//! Entries are keyed by HMAC-SHA256 of the credentials under a key made at
//! start: the cache never holds a password or anything a password can be
//! guessed from offline, and finding an entry takes a microsecond. The map
//! compares keys in variable time, which tells an observer about HMAC values
//! it cannot compute, not about passwords.

use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

type HmacSha256 = hmac::Hmac<sha2_011::Sha256>;

/// How long a successful check is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// Entries at most; when full, expired ones go, then all of them.
const MAX_ENTRIES: usize = 4096;

/// The user the credentials belong to, and when the entry expires.
type Entry = (Arc<str>, Instant);

/// A cache key: HMAC-SHA256 of credentials.
#[derive(Clone, Copy)]
pub struct Key([u8; 32]);

pub struct CredentialCache {
    /// The MAC with its random key already absorbed: cloning it skips two
    /// of the four SHA-256 blocks a keyed MAC of short input costs.
    keyed: HmacSha256,
    /// Read-locked for lookups, so that threads do not wait on each other.
    entries: RwLock<HashMap<[u8; 32], Entry>>,
}

impl CredentialCache {
    pub fn new() -> CredentialCache {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random numbers");
        CredentialCache {
            keyed: HmacSha256::new_from_slice(&key).expect("any key length"),
            entries: RwLock::new(HashMap::new()),
        }
    }

    fn mac(&self, domain: u8, parts: &[&[u8]]) -> Key {
        let mut mac = self.keyed.clone();
        mac.update(&[domain]);
        for p in parts {
            // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
            mac.update(&(p.len() as u64).to_le_bytes());
            mac.update(p);
        }
        Key(mac.finalize().into_bytes().into())
    }

    /// The key of an `Authorization: Basic` value as sent (not decoded: a
    /// hit costs no base64 and no allocation).
    pub fn basic_key(&self, encoded: &str) -> Key {
        self.mac(b'B', &[encoded.as_bytes()])
    }

    /// The key of a user name and password (the token service's form).
    pub fn key(&self, user: &str, password: &str) -> Key {
        self.mac(b'U', &[user.as_bytes(), password.as_bytes()])
    }

    /// The user, if the credentials behind `key` were checked successfully less than [`TTL`] ago.
    pub fn get(&self, key: &Key) -> Option<Arc<str>> {
        let entries = self.entries.read().unwrap();
        let (name, expires) = entries.get(&key.0)?;
        (Instant::now() < *expires).then(|| name.clone())
    }

    pub fn insert(&self, key: Key, user: &str) -> Arc<str> {
        let name: Arc<str> = Arc::from(user);
        let now = Instant::now();
        let mut entries = self.entries.write().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key.0, (name.clone(), now + TTL));
        name
    }

    /// Forgets everything (the password file changed).
    pub fn clear(&self) {
        self.entries.write().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_credentials_only() {
        let c = CredentialCache::new();
        assert!(c.get(&c.key("alice", "pw")).is_none());
        c.insert(c.key("alice", "pw"), "alice");
        assert_eq!(c.get(&c.key("alice", "pw")).as_deref(), Some("alice"));
        assert!(c.get(&c.key("alice", "pw2")).is_none());
        assert!(c.get(&c.key("alic", "epw")).is_none());
        // The header form is another key (it was not checked).
        assert!(c.get(&c.basic_key("YWxpY2U6cHc=")).is_none());
        c.insert(c.basic_key("YWxpY2U6cHc="), "alice");
        assert_eq!(c.get(&c.basic_key("YWxpY2U6cHc=")).as_deref(), Some("alice"));
        c.clear();
        assert!(c.get(&c.key("alice", "pw")).is_none());
    }

    #[test]
    fn bounded() {
        let c = CredentialCache::new();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(c.key(&format!("u{i}"), "pw"), "u");
        }
        assert!(c.entries.read().unwrap().len() <= MAX_ENTRIES);
    }
}
