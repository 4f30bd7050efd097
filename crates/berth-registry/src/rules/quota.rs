//! Quotas: the bytes a set of repositories (a glob) holds, each blob counted
//! once however many of its repositories or manifests reference it.
//!
//! **What counts.** The usage of a quota is the size of the distinct blobs
//! named by the manifests stored in its repositories: each manifest's own
//! bytes, its config and layers. A layer uploaded without a manifest does not
//! count (the next garbage collection pass frees it), and a deleted manifest
//! stops counting at the next pass, which is when its bytes are freed.
//!
//! **Where it is checked.** At the start of an upload whose size the client
//! announces (a monolithic `POST ?digest=` with `Content-Length`, a chunk
//! with `Content-Length`), while a chunk of unannounced size streams in (cut
//! off once the upload outgrows the room left), and at a manifest PUT, for
//! the blobs the manifest adds to the set, before anything is written. All
//! refuse with DENIED naming the quota, its limit and usage.
//!
//! **How it stays cheap.** Each quota keeps its set of counted digests in
//! memory (32 bytes a blob), built on first use by one walk of its
//! repositories and kept up to date by every manifest PUT, which reserves
//! its new blobs under the quota's lock (so two pushes cannot both fit in
//! the last gigabyte). A garbage collection pass forgets the sets (deletes and
//! the pass only ever lower usage); the next push rebuilds them.
//!
//! **Why a rebuild misses no push.** A PUT's reservation is *in flight* from
//! the moment it is counted until its manifest revision is written. A rebuild
//! holds the quota's lock (no new reservation), takes a snapshot of the
//! reservations in flight, walks storage, and adds the snapshot: a PUT in
//! flight at the snapshot is in it; one finished before it wrote its revision
//! before the walk began, so the walk reads it.

use super::ledger::{quota_id, Ledger, LedgerLock, LogNews, LogPosition};
use super::QuotaRule;
use crate::gc::{key, Key};
use crate::{Registry, RegistryError, Result};
use berth_spec::{Digest, Manifest, RepoName};
use berth_storage::layout;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The counters of every quota, in the order of the rules.
#[derive(Default)]
pub(crate) struct QuotaCounters {
    counters: Vec<Counter>,
    /// Where other processes write the store too: the quotas' locks and
    /// logs there (see [`super::ledger`]), and each quota's name in it.
    shared: Option<(Ledger, Vec<String>)>,
}

#[derive(Default)]
struct Counter {
    /// `None` until built (and after each garbage collection pass).
    counted: tokio::sync::Mutex<Option<Counted>>,
    /// Reservations whose manifest revision is not written yet: digest ->
    /// (size, how many reservations hold it).
    in_flight: Mutex<HashMap<Key, (u64, usize)>>,
}

#[derive(Default)]
struct Counted {
    blobs: HashSet<Key>,
    used: u64,
    /// On shared storage: how much of the quota's log is counted.
    log: LogPosition,
}

impl Counted {
    fn add(&mut self, blobs: impl IntoIterator<Item = (Key, u64)>) {
        for (k, size) in blobs {
            if self.blobs.insert(k) {
                self.used += size;
            }
        }
    }
}

/// How recent a count must be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Everything in the store's log (a reservation, under the quota's lock).
    Exact,
    /// Read from the log within the last second (checks of uploads, which
    /// the manifest PUT checks again exactly).
    Recent,
}

/// How long a count read from the log serves the upload checks.
const RECENT: std::time::Duration = std::time::Duration::from_secs(1);

impl QuotaCounters {
    pub(crate) fn new(rules: &[QuotaRule], ledger: Option<Ledger>) -> QuotaCounters {
        QuotaCounters {
            counters: (0..rules.len()).map(|_| Counter::default()).collect(),
            shared: ledger.map(|l| (l, rules.iter().map(|r| quota_id(r.repositories.as_str())).collect())),
        }
    }
}

/// Blobs a manifest PUT counted against quotas, in flight until dropped
/// (after the manifest revision is written, or the PUT failed).
pub(crate) struct Reservation<'a> {
    counters: &'a QuotaCounters,
    held: Vec<(usize, Vec<Key>)>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for (i, keys) in &self.held {
            let mut in_flight = self.counters.counters[*i].in_flight.lock().unwrap();
            for k in keys {
                if let Some(e) = in_flight.get_mut(k) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        in_flight.remove(k);
                    }
                }
            }
        }
    }
}

/// How much one quota holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuotaUsage {
    /// The quota's repository pattern.
    pub repositories: String,
    pub limit: u64,
    pub used: u64,
}

/// How much one repository holds (its blobs, each counted once).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepositoryUsage {
    pub repository: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct UsageReport {
    pub quotas: Vec<QuotaUsage>,
    pub repositories: Vec<RepositoryUsage>,
}

fn refusal(rule: &QuotaRule, used: u64, adding: u64) -> RegistryError {
    RegistryError::Denied(format!(
        "quota exceeded: repositories {} may hold {} bytes; they hold {} and this push adds {}",
        rule.repositories.as_str(),
        rule.limit,
        used,
        adding
    ))
}

impl Registry {
    /// The blobs a stored manifest counts for, with their sizes: its own
    /// bytes, its config and layers that are stored. Index children count as
    /// manifests of their own.
    async fn counted_blobs_of(&self, digest: &Digest) -> Result<Vec<(Key, u64)>> {
        let Some(content) = self.read_manifest_blob(digest).await? else {
            return Ok(Vec::new());
        };
        let mut out = vec![(key(digest), content.bytes.len() as u64)];
        if let Ok(m) = Manifest::parse(&content.bytes, Some(&content.media_type)) {
            for blob in m.required_blobs() {
                match self.backend.head(&layout::blob_data(&blob.digest)).await {
                    Ok(meta) => out.push((key(&blob.digest), meta.size)),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(out)
    }

    /// Every counted blob of one repository.
    async fn repository_blobs(&self, name: &RepoName, into: &mut HashMap<Key, u64>) -> Result<()> {
        for d in self.list_digest_dirs(&layout::revisions_dir(name)).await? {
            if !self.exists(&layout::manifest_revision_link(name, &d)).await? {
                continue;
            }
            into.extend(self.counted_blobs_of(&d).await?);
        }
        Ok(())
    }

    /// Walks the repositories of quota `i` (its lock held by the caller),
    /// and on shared storage adds every reservation in the quota's log. The
    /// walk comes first: a PUT writes its log entry before its revision, so
    /// a revision the walk misses has its entry listed after.
    async fn build_counted(&self, i: usize) -> Result<Counted> {
        let rule = &self.config.rules.quotas[i];
        let snapshot: Vec<(Key, u64)> = self.quotas.counters[i]
            .in_flight
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (size, _))| (*k, *size))
            .collect();
        let mut log = LogPosition::default();
        if let Some((ledger, ids)) = &self.quotas.shared {
            // Read before the walk: a pass that compacts meanwhile changes
            // it, and the next read counts afresh again.
            if let LogNews::NewGeneration(g) = ledger.news(&ids[i], &log).await? {
                log.generation = Some(g).filter(|g| !g.is_empty());
            }
        }
        let mut blobs = HashMap::new();
        for name in self.stored_repositories().await? {
            if rule.repositories.matches(name.as_str()) {
                self.repository_blobs(&name, &mut blobs).await?;
            }
        }
        blobs.extend(snapshot);
        let mut counted = Counted {
            used: 0,
            blobs: HashSet::new(),
            log,
        };
        counted.add(blobs);
        if let Some((ledger, ids)) = &self.quotas.shared {
            for (name, entry) in ledger.all_entries(&ids[i]).await? {
                counted.add(entry);
                counted.log.applied.insert(name);
            }
            counted.log.read_at = Some(std::time::Instant::now());
        }
        Ok(counted)
    }

    async fn counted(&self, i: usize, fresh: Fresh) -> Result<tokio::sync::MutexGuard<'_, Option<Counted>>> {
        let mut guard = self.quotas.counters[i].counted.lock().await;
        if guard.is_none() {
            *guard = Some(self.build_counted(i).await?);
            return Ok(guard);
        }
        let Some((ledger, ids)) = &self.quotas.shared else {
            return Ok(guard);
        };
        let c = guard.as_mut().expect("built");
        if fresh == Fresh::Recent && c.log.read_at.is_some_and(|t| t.elapsed() < RECENT) {
            return Ok(guard);
        }
        match ledger.news(&ids[i], &c.log).await? {
            LogNews::NewGeneration(_) => *guard = Some(self.build_counted(i).await?),
            LogNews::Entries(entries) => {
                for (name, entry) in entries {
                    c.add(entry);
                    c.log.applied.insert(name);
                }
                c.log.read_at = Some(std::time::Instant::now());
            }
        }
        Ok(guard)
    }

    /// Counts the blobs a manifest PUT to `name` adds against every quota of
    /// `name`, or refuses if one would be exceeded (then nothing is counted).
    pub(crate) async fn reserve_quota(&self, name: &RepoName, blobs: &[(Key, u64)]) -> Result<Reservation<'_>> {
        let mut reservation = Reservation {
            counters: &self.quotas,
            held: Vec::new(),
        };
        let rules: Vec<usize> = self.config.rules.quotas_for(name).map(|(i, _)| i).collect();
        if rules.is_empty() {
            return Ok(reservation);
        }
        // Locked in rule order, so two PUTs never wait on each other's half:
        // in the store first (other processes), then here.
        let mut store_locks = Vec::new();
        if let Some((ledger, ids)) = &self.quotas.shared {
            for &i in &rules {
                store_locks.push(ledger.lock(&ids[i]).await?);
            }
        }
        let counted = self
            .count_reservation(&rules, blobs, &store_locks, &mut reservation)
            .await;
        // Let go in the store whatever happened, before answering: the next
        // push (here or elsewhere) must not wait for a background delete.
        if let Some((ledger, _)) = &self.quotas.shared {
            for lock in store_locks {
                let unlocked = ledger.unlock(lock).await;
                if counted.is_ok() {
                    unlocked?;
                }
            }
        }
        counted.map(|()| reservation)
    }

    /// Checks `blobs` against quotas `rules` and counts them (recording
    /// them in the quotas' logs on shared storage, whose locks are held).
    async fn count_reservation<'a>(
        &'a self,
        rules: &[usize],
        blobs: &[(Key, u64)],
        store_locks: &[LedgerLock],
        reservation: &mut Reservation<'a>,
    ) -> Result<()> {
        let mut guards = Vec::with_capacity(rules.len());
        for &i in rules {
            guards.push(self.counted(i, Fresh::Exact).await?);
        }
        for (g, &i) in guards.iter().zip(rules) {
            let c = g.as_ref().expect("built above");
            let mut seen = HashSet::new();
            let adding: u64 = blobs
                .iter()
                .filter(|(k, _)| !c.blobs.contains(k) && seen.insert(*k))
                .map(|(_, s)| s)
                .sum();
            let rule = &self.config.rules.quotas[i];
            if adding > 0 && c.used.saturating_add(adding) > rule.limit {
                return Err(refusal(rule, c.used, adding));
            }
        }
        for (n, (g, &i)) in guards.iter_mut().zip(rules).enumerate() {
            let c = g.as_mut().expect("built above");
            if let Some((ledger, ids)) = &self.quotas.shared {
                // The reservation, for every process, before the revision.
                let new: Vec<(Key, u64)> = blobs.iter().filter(|(k, _)| !c.blobs.contains(k)).copied().collect();
                if !new.is_empty() {
                    let entry = ledger.append(&ids[i], &store_locks[n], &new).await?;
                    c.log.applied.insert(entry);
                }
            }
            c.add(blobs.iter().copied());
            let mut keys = Vec::new();
            for (k, _) in blobs {
                keys.push(*k);
            }
            let mut in_flight = self.quotas.counters[i].in_flight.lock().unwrap();
            for (k, size) in blobs {
                in_flight.entry(*k).or_insert((*size, 0)).1 += 1;
            }
            reservation.held.push((i, keys));
        }
        Ok(())
    }

    /// After a garbage collection pass on shared storage (`now`: the pass's
    /// start in store time): folds the old log entries of every quota into
    /// the walk and starts a new generation (see [`super::ledger`]).
    pub(crate) async fn compact_quota_logs(&self, now: std::time::SystemTime) -> Result<()> {
        if let Some((ledger, ids)) = &self.quotas.shared {
            for id in ids {
                ledger.compact(id, now).await?;
            }
        }
        Ok(())
    }

    /// Refuses an upload of `size` bytes to `name` that no quota of `name`
    /// could take (unless the quota counts the blob already): checked when
    /// the client announces the size, before it sends the bytes.
    pub async fn check_upload_quota(&self, name: &RepoName, digest: Option<&Digest>, size: u64) -> Result<()> {
        for (i, rule) in self.config.rules.quotas_for(name) {
            let g = self.counted(i, Fresh::Recent).await?;
            let c = g.as_ref().expect("built");
            if digest.is_some_and(|d| c.blobs.contains(&key(d))) {
                continue;
            }
            if c.used.saturating_add(size) > rule.limit {
                return Err(refusal(rule, c.used, size));
            }
        }
        Ok(())
    }

    /// The bytes an upload to `name` may hold before a quota of `name` is
    /// full (the least room of its quotas); `None` when no quota applies.
    /// For uploads whose size nobody announced: they are cut off there.
    pub async fn upload_room(&self, name: &RepoName) -> Result<Option<u64>> {
        let mut room: Option<u64> = None;
        for (i, rule) in self.config.rules.quotas_for(name) {
            let g = self.counted(i, Fresh::Recent).await?;
            let c = g.as_ref().expect("built");
            let r = rule.limit.saturating_sub(c.used);
            room = Some(room.map_or(r, |x| x.min(r)));
        }
        Ok(room)
    }

    /// Forgets the counts (after a garbage collection pass); the next use
    /// rebuilds them.
    pub(crate) async fn forget_quota_counts(&self) {
        for c in &self.quotas.counters {
            *c.counted.lock().await = None;
        }
    }

    /// What every quota and every repository holds. Walks every repository:
    /// for `berth usage` and the admin API, not the request path.
    pub async fn usage(&self) -> Result<UsageReport> {
        let mut report = UsageReport::default();
        for (i, rule) in self.config.rules.quotas.iter().enumerate() {
            let g = self.counted(i, Fresh::Exact).await?;
            report.quotas.push(QuotaUsage {
                repositories: rule.repositories.as_str().to_owned(),
                limit: rule.limit,
                used: g.as_ref().map_or(0, |c| c.used),
            });
        }
        let mut names = self.stored_repositories().await?;
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        for name in names {
            let mut blobs = HashMap::new();
            self.repository_blobs(&name, &mut blobs).await?;
            report.repositories.push(RepositoryUsage {
                repository: name.as_str().to_owned(),
                bytes: blobs.values().sum(),
            });
        }
        Ok(report)
    }
}
