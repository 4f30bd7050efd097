//! The catalog (every repository) and housekeeping that walks repositories.

use crate::{Registry, Result};
use berth_spec::RepoName;
use berth_storage::layout;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::SystemTime;

/// One page of the catalog (see [`Registry::catalog_page`]).
#[derive(Debug, PartialEq, Eq)]
pub struct CatalogPage {
    pub repositories: Vec<String>,
    /// Whether more repositories follow this page.
    pub more: bool,
}

impl Registry {
    /// Every repository, from storage and from the read-only sources, sorted.
    ///
    /// Storage is walked: a directory is a repository when it holds
    /// `_layers` (as in distribution, whose catalog looks for that) or
    /// `_manifests`. So a repository whose manifests were all deleted stays
    /// listed while its layers do, on S3 as on a filesystem (where the
    /// emptied directories stay). Directories starting with `_` are
    /// repository internals and never names.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        Ok(self.catalog_page(None, None, |_| true).await?.repositories)
    }

    /// One page of the catalog: the first `n` repositories (all of them
    /// without `n`) that sort after `last` and that `visible` keeps, and
    /// whether more follow. Filtering before counting keeps pages full.
    ///
    /// A page costs what it lists, not what the registry holds: storage is
    /// walked in name order and the walk stops at the page plus one name,
    /// never listing a directory whose whole subtree sorts at or before
    /// `last` (see [`Registry::stored_repositories_after`]). Read-only
    /// sources are in memory and are merged whole.
    pub async fn catalog_page(
        &self,
        last: Option<&str>,
        n: Option<usize>,
        visible: impl Fn(&str) -> bool,
    ) -> Result<CatalogPage> {
        let after = |name: &str| last.is_none_or(|l| name > l);
        // One more than the page: whether it exists says whether a next page does.
        let want = n.map(|n| n.saturating_add(1));
        let mut names = if self.catalog_index_usable().await? {
            self.indexed_repositories_after(last, want, &visible).await?
        } else {
            self.stored_repositories_after(last, want, &visible).await?
        };
        for source in &self.sources {
            names.extend(
                source
                    .repositories()
                    .await?
                    .into_iter()
                    .map(|n| n.to_string())
                    .filter(|n| after(n) && visible(n)),
            );
        }
        // Each part holds its first n+1 names after `last`, so the merge's
        // first n+1 are the catalog's.
        names.sort();
        names.dedup();
        // n=0 asks for an empty page, which must not link to a next one (it would be the same page).
        let more = n.is_some_and(|n| n > 0 && names.len() > n);
        if let Some(n) = n {
            names.truncate(n);
        }
        Ok(CatalogPage {
            repositories: names,
            more,
        })
    }

    /// The stored repositories that sort after `last` and that `visible`
    /// keeps, in order, at most `want` of them.
    ///
    /// The walk takes directories off a min-heap by name: everything below a
    /// directory sorts after it (`a/x` > `a`), so directories come off in
    /// increasing order, and so do the repositories found in them, which
    /// lets the walk stop as soon as it has `want`. (A depth-first walk
    /// would not give name order: `a-b` sorts before `a/x`.)
    async fn stored_repositories_after(
        &self,
        last: Option<&str>,
        want: Option<usize>,
        visible: &impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut pending = BinaryHeap::from([Reverse(String::new())]);
        while let Some(Reverse(rel)) = pending.pop() {
            if want.is_some_and(|w| found.len() >= w) {
                break;
            }
            let dir = if rel.is_empty() {
                root.clone()
            } else {
                format!("{root}/{rel}")
            };
            let mut listed = false;
            for child in self.backend.list(&dir).await? {
                if child == "_manifests" || child == "_layers" {
                    if !listed
                        && last.is_none_or(|l| rel.as_str() > l)
                        && rel.parse::<RepoName>().is_ok()
                        && visible(&rel)
                    {
                        found.push(rel.clone());
                    }
                    listed = true;
                } else if !child.starts_with('_') {
                    let path = if rel.is_empty() {
                        child
                    } else {
                        format!("{rel}/{child}")
                    };
                    if !wholly_at_or_before(&path, last) {
                        pending.push(Reverse(path));
                    }
                }
            }
        }
        Ok(found)
    }

    /// Walks `repositories/` and returns every repository directory that
    /// holds the internal directory `marker` (`_manifests`, `_uploads`, ...).
    /// Directories starting with `_` are repository internals, never names.
    pub(crate) async fn repositories_with(&self, marker: &str) -> Result<Vec<RepoName>> {
        let root = layout::repositories_root();
        let mut found = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(rel) = pending.pop() {
            let dir = if rel.is_empty() {
                root.clone()
            } else {
                format!("{root}/{rel}")
            };
            for child in self.backend.list(&dir).await? {
                if child == marker {
                    if let Ok(name) = rel.parse::<RepoName>() {
                        found.push(name);
                    }
                } else if !child.starts_with('_') {
                    pending.push(if rel.is_empty() {
                        child
                    } else {
                        format!("{rel}/{child}")
                    });
                }
            }
        }
        Ok(found)
    }

    pub(crate) async fn stored_repositories(&self) -> Result<Vec<RepoName>> {
        self.repositories_with("_manifests").await
    }

    /// Removes uploads idle for longer than the configured maximum age.
    /// Returns how many were removed.
    pub async fn purge_stale_uploads(&self) -> Result<usize> {
        let max_age = self.config.upload_max_age;
        let now = SystemTime::now();
        let mut removed = 0;
        for name in self.repositories_with("_uploads").await? {
            removed += self.purge_repository_uploads(&name, now, max_age).await?;
        }
        // On S3, the multipart uploads of appends a killed process left open.
        removed += self.backend.abort_stale_multipart_uploads(max_age).await?;
        Ok(removed)
    }

    async fn purge_repository_uploads(
        &self,
        name: &RepoName,
        now: SystemTime,
        max_age: std::time::Duration,
    ) -> Result<usize> {
        let mut removed = 0;
        for id in self.backend.list(&layout::uploads_dir(name)).await? {
            let key = layout::upload_data(name, &id);
            let (last_active, legacy) = match self.backend.head(&key).await {
                Ok(meta) => (meta.modified, false),
                // Not a file: an upload in distribution's layout (a directory
                // with its start time), or gone since the listing.
                Err(e) if e.is_not_found() => (self.legacy_upload_start(name, &id).await?, true),
                Err(e) => return Err(e.into()),
            };
            let stale = match last_active {
                Some(t) => now.duration_since(t).map(|age| age > max_age).unwrap_or(false),
                // A legacy directory without a start time is a crash's leftover;
                // a file whose time the backend cannot tell is left alone.
                None => legacy,
            };
            // An upload some request is writing to right now is not stale, whatever its age.
            let session = crate::uploads::session_key(name, &id);
            if stale && self.uploads.close_if_idle(&session) {
                let deleted = match legacy {
                    true => self.backend.delete_prefix(&key).await,
                    false => self.backend.delete(&key).await,
                };
                self.uploads.remove(&session);
                deleted?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn legacy_upload_start(&self, name: &RepoName, id: &str) -> Result<Option<SystemTime>> {
        match self.backend.get(&layout::legacy_upload_started_at(name, id)).await {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| {
                    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
                })
                .map(SystemTime::from)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether `path` and every path below it sort at or before `last`, so that
/// a catalog page after `last` need not list it. Everything below `path`
/// starts with `path/`: all of it sorts before `last` when `path/` does and
/// `last` is not itself below `path`.
fn wholly_at_or_before(path: &str, last: Option<&str>) -> bool {
    let Some(last) = last else { return false };
    let below = format!("{path}/");
    path <= last && below.as_str() < last && !last.starts_with(&below)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RegistryConfig;
    use berth_storage::FsBackend;
    use std::sync::Arc;

    #[test]
    fn a_subtree_is_skipped_only_when_all_of_it_sorts_at_or_before_last() {
        assert!(!wholly_at_or_before("a", None));
        assert!(wholly_at_or_before("a", Some("b")));
        assert!(wholly_at_or_before("a/x", Some("a/y")));
        // `a/z` is below `a` and after `a/y`.
        assert!(!wholly_at_or_before("a", Some("a/y")));
        // `a/x` sorts after `a-b` ('/' > '-').
        assert!(!wholly_at_or_before("a", Some("a-b")));
        // Below `last` itself: `a/b/c` > `a/b`.
        assert!(!wholly_at_or_before("a/b", Some("a/b")));
        assert!(!wholly_at_or_before("c", Some("b")));
    }

    /// Every page of every size, after every name and between names, is the
    /// matching slice of the whole sorted catalog, and `more` is right.
    #[tokio::test]
    async fn pages_are_slices_of_the_sorted_catalog() {
        let dir = tempfile::tempdir().unwrap();
        // Names whose depth-first order differs from their sorted order,
        // repositories nested in repositories, directories that are only
        // namespaces (`ns`, `b`), and a repository with layers but no
        // manifest (listed, as distribution lists it).
        let repos = [
            "a",
            "a-b",
            "a/x",
            "a/x/deep",
            "a.c",
            "a0",
            "b/c/d",
            "b/c-d",
            "b/cd",
            "layers/only",
            "ns/one",
            "ns/two",
            "z",
        ];
        for r in repos {
            let internal = if r == "layers/only" { "_layers" } else { "_manifests" };
            std::fs::create_dir_all(
                dir.path()
                    .join("docker/registry/v2/repositories")
                    .join(r)
                    .join(internal),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("docker/registry/v2/repositories/a/_layers")).unwrap();
        std::fs::create_dir_all(dir.path().join("docker/registry/v2/repositories/ns/_uploads")).unwrap();
        let reg = Registry::new(Arc::new(FsBackend::new(dir.path())), RegistryConfig::default());
        let all = reg.catalog().await.unwrap();
        let mut sorted: Vec<String> = repos.map(String::from).into();
        sorted.sort();
        assert_eq!(all, sorted);

        let mut lasts: Vec<Option<String>> = vec![None, Some("".into()), Some("a/".into()), Some("b/c".into())];
        lasts.extend(all.iter().cloned().map(Some));
        for last in &lasts {
            let rest: Vec<String> = all
                .iter()
                .filter(|r| last.as_ref().is_none_or(|l| *r > l))
                .cloned()
                .collect();
            for n in [None, Some(0), Some(1), Some(2), Some(5), Some(100)] {
                let page = reg.catalog_page(last.as_deref(), n, |_| true).await.unwrap();
                let expect: Vec<String> = rest.iter().take(n.unwrap_or(usize::MAX)).cloned().collect();
                assert_eq!(page.repositories, expect, "last {last:?} n {n:?}");
                assert_eq!(
                    page.more,
                    n.is_some_and(|n| n > 0 && rest.len() > n),
                    "last {last:?} n {n:?}"
                );
            }
        }
        // Filtered before counting: the page stays full.
        let page = reg.catalog_page(None, Some(2), |r| r.starts_with('b')).await.unwrap();
        assert_eq!(page.repositories, ["b/c-d", "b/c/d"]);
        assert!(page.more);
    }
}
