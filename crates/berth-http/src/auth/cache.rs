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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type HmacSha256 = hmac::Hmac<sha2_011::Sha256>;

/// How long a successful check is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// Entries at most; when full, expired ones go, then all of them.
const MAX_ENTRIES: usize = 4096;

/// The user the credentials belong to, and when the entry expires.
type Entry = (Arc<str>, Instant);

pub struct CredentialCache {
    /// The MAC with its random key already absorbed: cloning it skips two
    /// of the four SHA-256 blocks a keyed MAC of short input costs.
    keyed: HmacSha256,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl CredentialCache {
    pub fn new() -> CredentialCache {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random numbers");
        CredentialCache {
            keyed: HmacSha256::new_from_slice(&key).expect("any key length"),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn fingerprint(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        // The length prefix keeps ("ab", "c") and ("a", "bc") apart.
        mac.update(&(user.len() as u64).to_le_bytes());
        mac.update(user.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The user, if these exact credentials were checked successfully less than [`TTL`] ago.
    pub fn get(&self, user: &str, password: &str) -> Option<Arc<str>> {
        let fp = self.fingerprint(user, password);
        let entries = self.entries.lock().unwrap();
        let (name, expires) = entries.get(&fp)?;
        (Instant::now() < *expires).then(|| name.clone())
    }

    pub fn insert(&self, user: &str, password: &str) -> Arc<str> {
        let fp = self.fingerprint(user, password);
        let name: Arc<str> = Arc::from(user);
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(fp, (name.clone(), now + TTL));
        name
    }

    /// Forgets everything (the password file changed).
    pub fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_credentials_only() {
        let c = CredentialCache::new();
        assert!(c.get("alice", "pw").is_none());
        c.insert("alice", "pw");
        assert_eq!(c.get("alice", "pw").as_deref(), Some("alice"));
        assert!(c.get("alice", "pw2").is_none());
        assert!(c.get("alic", "epw").is_none());
        c.clear();
        assert!(c.get("alice", "pw").is_none());
    }

    #[test]
    fn bounded() {
        let c = CredentialCache::new();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(&format!("u{i}"), "pw");
        }
        assert!(c.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
