//! Users from an htpasswd file with bcrypt hashes (what `htpasswd -B`
//! writes), re-read when the file changes.
//!
//! Checking a password costs a bcrypt run on the blocking pool; successful
//! checks are remembered ([`CredentialCache`]) and failures are rate-limited
//! ([`Limiter`]). An unknown user costs the same bcrypt run as a wrong
//! password, so timing does not tell which users exist.

use super::cache::{CredentialCache, Key};
use super::limiter::Limiter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often the file is looked at for changes.
const POLL: Duration = Duration::from_secs(2);

/// A bcrypt hash of a random password nobody knows, at the cost the file's
/// first entry uses: checked against when the user does not exist, so that
/// the answer takes as long as for a wrong password.
fn decoy(table: &UserTable) -> String {
    let cost = table
        .hashes
        .values()
        .next()
        .and_then(|h| h.get(4..6))
        .and_then(|c| c.parse::<u32>().ok())
        .unwrap_or(bcrypt::DEFAULT_COST)
        .clamp(4, 14);
    let mut secret = [0u8; 24];
    getrandom::fill(&mut secret).expect("the operating system's random numbers");
    bcrypt::hash(secret, cost).expect("bcrypt of a fixed-size input")
}

/// The users of one htpasswd file: name -> bcrypt hash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserTable {
    hashes: HashMap<String, String>,
}

impl UserTable {
    /// Parses htpasswd text. Lines are `user:hash`; blank lines and `#`
    /// comments are skipped. Entries that are not bcrypt are reported and
    /// left out (MD5, SHA1 and crypt hashes are too weak to accept).
    pub fn parse(text: &str) -> (UserTable, Vec<String>) {
        let mut hashes = HashMap::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                problems.push(format!("line {}: expected user:hash", i + 1));
                continue;
            };
            if user.is_empty() {
                problems.push(format!("line {}: empty user name", i + 1));
                continue;
            }
            if !is_bcrypt(hash) {
                problems.push(format!(
                    "line {} (user {user:?}): not a bcrypt hash; create it with `htpasswd -B`",
                    i + 1
                ));
                continue;
            }
            if hashes.insert(user.to_owned(), hash.to_owned()).is_some() {
                problems.push(format!("line {}: user {user:?} again; the last entry counts", i + 1));
            }
        }
        (UserTable { hashes }, problems)
    }

    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.hashes.get(user).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2y$", "$2b$", "$2a$", "$2x$"].iter().any(|p| hash.starts_with(p)) && hash.len() == 60
}

/// Why a login failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong user or password (which of the two is not said).
    Invalid,
    /// Too many failures from this address or for this user; try after this long.
    Limited(Duration),
}

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The users of an htpasswd file, with the cache and the limiter of logins.
pub struct Users {
    path: PathBuf,
    table: RwLock<(Arc<UserTable>, Option<Stamp>)>,
    decoy: String,
    cache: CredentialCache,
    limiter: Limiter,
}

impl Users {
    /// Reads `path`; an unreadable file is an error (berth does not start
    /// without the users it was told to use).
    pub fn open(path: &Path) -> std::io::Result<Users> {
        let st = stamp(path)?;
        let text = std::fs::read_to_string(path)?;
        let (table, problems) = UserTable::parse(&text);
        for p in &problems {
            tracing::warn!(target: "berth::auth", file = %path.display(), "htpasswd: {p}");
        }
        tracing::info!(target: "berth::auth", file = %path.display(), users = table.len(), "htpasswd loaded");
        Ok(Users {
            decoy: decoy(&table),
            path: path.to_owned(),
            table: RwLock::new((Arc::new(table), Some(st))),
            cache: CredentialCache::new(),
            limiter: Limiter::default(),
        })
    }

    /// A table that is not backed by a file (tests, or no htpasswd: nobody can sign in).
    pub fn fixed(table: UserTable) -> Users {
        Users {
            decoy: decoy(&table),
            path: PathBuf::new(),
            table: RwLock::new((Arc::new(table), None)),
            cache: CredentialCache::new(),
            limiter: Limiter::default(),
        }
    }

    pub fn table(&self) -> Arc<UserTable> {
        self.table.read().unwrap().0.clone()
    }

    /// Re-reads the file if it changed since it was last read. A file that
    /// cannot be read keeps the users berth has (and says so).
    pub fn reload_if_changed(&self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        let st = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                let mut guard = self.table.write().unwrap();
                if guard.1.take().is_some() {
                    tracing::warn!(target: "berth::auth", file = %self.path.display(), error = %e,
                        "htpasswd cannot be read; keeping the users loaded before");
                }
                return;
            }
        };
        if self.table.read().unwrap().1.as_ref() == Some(&st) {
            return;
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(target: "berth::auth", file = %self.path.display(), error = %e,
                    "htpasswd cannot be read; keeping the users loaded before");
                return;
            }
        };
        let (table, problems) = UserTable::parse(&text);
        for p in &problems {
            tracing::warn!(target: "berth::auth", file = %self.path.display(), "htpasswd: {p}");
        }
        *self.table.write().unwrap() = (Arc::new(table), Some(st));
        // A changed or removed password must stop working at once.
        self.cache.clear();
        tracing::info!(target: "berth::auth", file = %self.path.display(), users = self.table().len(), "htpasswd reloaded");
    }

    /// Re-reads the file whenever it changes, until the returned task is aborted.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let users = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(users) = users.upgrade() else { return };
                // A stat, and rarely a small read: fine on the blocking pool.
                let _ = tokio::task::spawn_blocking(move || users.reload_if_changed()).await;
            }
        })
    }

    /// The key under which a successful check of an `Authorization: Basic`
    /// value is remembered.
    pub fn basic_key(&self, encoded: &str) -> Key {
        self.cache.basic_key(encoded)
    }

    /// The user, if the credentials behind `key` were checked successfully a
    /// short while ago (no bcrypt, no await).
    pub fn cached(&self, key: &Key) -> Option<Arc<str>> {
        self.cache.get(key)
    }

    /// Checks a password. `client` is the address the request came from (for the limiter and the log).
    pub async fn login(&self, user: &str, password: &str, client: IpAddr) -> Result<Arc<str>, LoginError> {
        self.login_keyed(self.cache.key(user, password), user, password, client)
            .await
    }

    /// Checks a password, remembering success under `key`.
    pub async fn login_keyed(
        &self,
        key: Key,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Arc<str>, LoginError> {
        if let Some(name) = self.cache.get(&key) {
            return Ok(name);
        }
        if let Err(wait) = self.limiter.check(client, user) {
            tracing::warn!(target: "berth::auth", user, %client, "login refused: too many failed attempts");
            return Err(LoginError::Limited(wait));
        }
        let table = self.table();
        let known = table.hash_of(user).is_some();
        let hash = table.hash_of(user).unwrap_or(&self.decoy).to_owned();
        let pw = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pw.as_bytes(), &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok && known {
            Ok(self.cache.insert(key, user))
        } else {
            self.limiter.failed(client, user);
            let reason = if known { "wrong password" } else { "unknown user" };
            tracing::warn!(target: "berth::auth", user, %client, reason, "login failed");
            Err(LoginError::Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB alice secret` and `htpasswd -nbB bob hunter2` (cost 5, to keep tests quick).
    pub(crate) fn sample() -> String {
        let a = bcrypt::hash("secret", 5).unwrap();
        let b = bcrypt::hash("hunter2", 5).unwrap().replacen("$2b$", "$2y$", 1);
        format!("# users\nalice:{a}\n\nbob:{b}\n")
    }

    #[test]
    fn parses_bcrypt_entries_and_reports_the_rest() {
        let text = format!(
            "{}carol:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\ndave:$apr1$abc$def\nnocolon\n:$2y$05$x\n",
            sample()
        );
        let (t, problems) = UserTable::parse(&text);
        assert_eq!(t.len(), 2);
        assert!(t.hash_of("alice").is_some() && t.hash_of("bob").is_some());
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("carol") && problems[0].contains("htpasswd -B"));
        // No hash is ever echoed in a problem.
        assert!(problems.iter().all(|p| !p.contains("$apr1") && !p.contains("W6ph")));
    }

    #[tokio::test]
    async fn logins_are_checked_cached_and_limited() {
        let (t, _) = UserTable::parse(&sample());
        let users = Users::fixed(t);
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(users.login("alice", "secret", addr).await.as_deref(), Ok("alice"));
        // $2y$ (what htpasswd writes) verifies too.
        assert_eq!(users.login("bob", "hunter2", addr).await.as_deref(), Ok("bob"));
        assert!(users.cached(&users.cache.key("alice", "secret")).is_some());
        assert_eq!(users.login("alice", "wrong", addr).await, Err(LoginError::Invalid));
        assert_eq!(users.login("nobody", "secret", addr).await, Err(LoginError::Invalid));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..20 {
            let _ = users.login("mallory", "guess", other).await;
        }
        assert!(matches!(
            users.login("mallory", "guess", other).await,
            Err(LoginError::Limited(_))
        ));
        // Cached credentials still work from a limited address.
        assert!(users.login("alice", "secret", other).await.is_ok());
    }

    #[test]
    fn reloads_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(&path, sample()).unwrap();
        let users = Users::open(&path).unwrap();
        assert_eq!(users.table().len(), 2);
        users.cache.insert(users.cache.key("alice", "secret"), "alice");
        std::fs::write(&path, format!("carol:{}\n", bcrypt::hash("x", 4).unwrap())).unwrap();
        users.reload_if_changed();
        assert_eq!(users.table().len(), 1);
        assert!(users.table().hash_of("carol").is_some());
        assert!(
            users.cached(&users.cache.key("alice", "secret")).is_none(),
            "a reload forgets cached logins"
        );
        // A vanished file keeps the users.
        std::fs::remove_file(&path).unwrap();
        users.reload_if_changed();
        assert_eq!(users.table().len(), 1);
    }
}
