//! The catalog's index where several processes share the store (S3): one
//! entry per repository (see `berth_storage::CatalogIndexed`, which writes
//! an entry whenever a link of the repository is written), so that a catalog
//! page is one listing from a start-after cursor instead of a listing per
//! repository directory.
//!
//! The index is trusted only once complete: [`Registry::reconcile_catalog_index`]
//! walks the layout, adds the entries missing (repositories written before
//! the index, or by distribution on the same bucket) and then writes the
//! *complete* marker; until it exists the catalog walks. Each garbage
//! collection pass reconciles again with the repositories its mark walked,
//! removing the entries of repositories that lost every link (only entries
//! older than the pass, and after checking the repository again), so a
//! repository another program created, or one a pass emptied, is listed
//! right at the latest after the next pass.

use crate::{Registry, Result};
use berth_spec::RepoName;
use berth_storage::layout;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Index entries written or checked side by side by a reconciliation.
const INDEX_WRITES_IN_FLIGHT: usize = 16;

/// What a reconciliation changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexRepair {
    pub added: usize,
    pub removed: usize,
}

impl Registry {
    /// Whether catalog pages come from the index: shared storage, and the
    /// index is complete (remembered once seen, since nothing removes the
    /// marker).
    pub async fn catalog_index_usable(&self) -> Result<bool> {
        if self.config.exclusive_storage {
            return Ok(false);
        }
        if self.catalog_indexed.load(Ordering::Relaxed) {
            return Ok(true);
        }
        match self.backend.head(&layout::catalog_index_complete()).await {
            Ok(_) => {
                self.catalog_indexed.store(true, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The repositories of the index that sort after `last` and that
    /// `visible` keeps, in order, at most `want`: a listing of `want` entries
    /// (one round trip for up to a thousand), more only where `visible`
    /// dropped some.
    pub(crate) async fn indexed_repositories_after(
        &self,
        last: Option<&str>,
        want: Option<usize>,
        visible: &impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let root = layout::catalog_index_root();
        // Hex keeps byte order: the entries after hex(last) are the names
        // after `last`, whatever `last` holds.
        let mut cursor = last.map(layout::catalog_entry);
        let batch = want.map_or(usize::MAX, |w| w.clamp(1, 1000));
        let mut found = Vec::new();
        loop {
            let entries = self.backend.list_keys_after(&root, cursor.as_deref(), batch).await?;
            let full = entries.len() == batch;
            for entry in &entries {
                if let Some(name) = layout::parse_catalog_entry(entry) {
                    if visible(name.as_str()) {
                        found.push(name.to_string());
                    }
                }
            }
            if want.is_some_and(|w| found.len() >= w) || !full {
                break;
            }
            cursor = entries.last().cloned();
        }
        if let Some(w) = want {
            found.truncate(w);
        }
        Ok(found)
    }

    /// Makes the index hold every repository of `walked` (the layout's
    /// repositories; walked here when `None`) and marks it complete. With
    /// `since` (store time, before the walk began), also removes the entries
    /// of repositories that are no more, if written before `since` and still
    /// without a link when checked again. Only on shared storage.
    pub async fn reconcile_catalog_index(
        &self,
        walked: Option<&[RepoName]>,
        since: Option<SystemTime>,
    ) -> Result<IndexRepair> {
        let mut repair = IndexRepair::default();
        if self.config.exclusive_storage {
            return Ok(repair);
        }
        let walked: Vec<RepoName> = match walked {
            Some(w) => w.to_vec(),
            None => {
                let mut repos = self.repositories_with("_manifests").await?;
                repos.extend(self.repositories_with("_layers").await?);
                repos
            }
        };
        let root = layout::catalog_index_root();
        let entries = self.backend.list_keys_after(&root, None, usize::MAX).await?;
        let indexed: HashSet<&str> = entries.iter().map(String::as_str).collect();
        let wanted: HashSet<String> = walked.iter().map(|n| layout::catalog_entry(n.as_str())).collect();
        // Side by side: a bucket distribution wrote may need thousands.
        let missing: Vec<String> = wanted
            .iter()
            .filter(|e| !indexed.contains(e.as_str()))
            .map(|e| format!("{root}/{e}"))
            .collect();
        repair.added = missing.len();
        futures::stream::iter(missing)
            .map(|key| async move { self.backend.put(&key, Bytes::new()).await })
            .buffer_unordered(INDEX_WRITES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        if let Some(since) = since {
            let stale: Vec<String> = entries.iter().filter(|e| !wanted.contains(*e)).cloned().collect();
            let root = &root;
            let removed = futures::stream::iter(stale)
                .map(|entry| async move { self.remove_entry_if_gone(root, &entry, since).await })
                .buffer_unordered(INDEX_WRITES_IN_FLIGHT)
                .try_collect::<Vec<bool>>()
                .await?;
            repair.removed = removed.into_iter().filter(|r| *r).count();
        }
        self.backend
            .put(&layout::catalog_index_complete(), Bytes::new())
            .await?;
        self.catalog_indexed.store(true, Ordering::Relaxed);
        Ok(repair)
    }

    /// Removes the index entry `entry` if it was written before `since` and
    /// its repository has no link now; whether it did.
    async fn remove_entry_if_gone(&self, root: &str, entry: &str, since: SystemTime) -> Result<bool> {
        let key = format!("{root}/{entry}");
        let old = match self.backend.head(&key).await {
            Ok(meta) => meta.modified.is_some_and(|t| t < since),
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let gone = match layout::parse_catalog_entry(entry) {
            Some(name) => old && !self.is_stored_repository(&name).await?,
            // Not an entry berth writes: nothing lists it anyway.
            None => true,
        };
        if gone {
            self.backend.delete(&key).await?;
        }
        Ok(gone)
    }

    /// Whether `name` is a repository of the layout now (has layer links or
    /// manifests), as the walk decides.
    async fn is_stored_repository(&self, name: &RepoName) -> Result<bool> {
        let children = self.backend.list(&layout::repository(name)).await?;
        Ok(children.iter().any(|c| c == "_manifests" || c == "_layers"))
    }
}
