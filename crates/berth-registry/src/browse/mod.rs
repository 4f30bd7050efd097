//! Queries for browsing the registry (the web page and berth's browse API):
//! a filtered, paged catalog with per-repository summaries, a repository's
//! tags with what they point at, and one image in detail (`image.rs`).
//!
//! Everything here reads; nothing changes stored data. What a manifest digest
//! summarizes to (size, platforms, kind) never changes, so it is cached by
//! digest: a repository page with 1,000 tags then costs one link read and one
//! stat per tag.

mod image;
mod summary;

pub use image::{ImageConfig, ImageDetail, ImageHistory, ImageLayer, IndexEntry};
pub use summary::ManifestSummary;
pub(crate) use summary::SummaryCache;

use crate::{Registry, RegistryError, Result};
use berth_spec::{Descriptor, Digest, Reference, RepoName, Tag};
use berth_storage::layout;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Which repositories a catalog page shows.
#[derive(Debug, Clone, Default)]
pub struct CatalogQuery {
    /// Only names containing this (case-insensitive); empty: all.
    pub search: String,
    /// Only names below this namespace (`team` shows `team/app`, `team/x/y`); empty: all.
    pub prefix: String,
    pub offset: usize,
    pub limit: usize,
}

/// One page of the catalog.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogPage {
    /// How many repositories match the query (all pages).
    pub total: usize,
    pub offset: usize,
    pub repositories: Vec<RepositorySummary>,
    /// The namespaces one level below the prefix that hold matching
    /// repositories, with how many each holds: the namespace tree, one level at a time.
    pub namespaces: Vec<NamespaceCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamespaceCount {
    /// The full namespace (`team/backend`).
    pub name: String,
    pub repositories: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepositorySummary {
    pub name: String,
    pub tags: usize,
    /// When a tag was last moved (Unix seconds); `None` without tags, or
    /// for read-only sources whose files have no push time.
    pub last_push: Option<u64>,
    /// Bytes of what the most recently pushed tag points at (all platforms of an index).
    pub size: u64,
}

/// A repository with every tag.
#[derive(Debug, Clone, Serialize)]
pub struct RepositoryDetail {
    pub name: String,
    /// Served from a read-only source: nothing can be deleted.
    pub read_only: bool,
    /// Sorted by name.
    pub tags: Vec<TagDetail>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TagDetail {
    pub name: String,
    pub digest: Digest,
    #[serde(flatten)]
    pub summary: ManifestSummary,
    /// Unix seconds the tag was last moved, where storage knows it.
    pub pushed: Option<u64>,
    /// Manifests whose `subject` is this tag's manifest (signatures, SBOMs, attestations).
    pub referrers: Vec<Descriptor>,
}

pub(crate) fn unix_seconds(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Applies the search and the prefix to a sorted catalog, and counts the
/// namespaces one level below the prefix.
pub fn filter_catalog(all: Vec<String>, query: &CatalogQuery) -> (Vec<String>, Vec<NamespaceCount>) {
    let search = query.search.to_ascii_lowercase();
    let prefix = query.prefix.trim_matches('/');
    let under = format!("{prefix}/");
    let matching: Vec<String> = all
        .into_iter()
        .filter(|n| prefix.is_empty() || n.starts_with(&under))
        .filter(|n| search.is_empty() || n.to_ascii_lowercase().contains(&search))
        .collect();
    let mut namespaces: BTreeMap<&str, usize> = BTreeMap::new();
    let skip = if prefix.is_empty() { 0 } else { under.len() };
    for name in &matching {
        let rest = &name[skip..];
        if let Some(i) = rest.find('/') {
            *namespaces.entry(&name[..skip + i]).or_default() += 1;
        }
    }
    let namespaces = namespaces
        .into_iter()
        .map(|(name, repositories)| NamespaceCount {
            name: name.to_owned(),
            repositories,
        })
        .collect();
    (matching, namespaces)
}

impl Registry {
    /// One page of the repositories `visible` lets through that match `query`,
    /// each summarized. Only the page's repositories are summarized, so a
    /// page costs the same with 10 repositories or 10,000 (but for the walk).
    pub async fn browse_catalog(&self, query: &CatalogQuery, visible: impl Fn(&str) -> bool) -> Result<CatalogPage> {
        let mut all = self.catalog().await?;
        all.retain(|n| visible(n));
        let (matching, namespaces) = filter_catalog(all, query);
        let mut repositories = Vec::new();
        for name in matching.iter().skip(query.offset).take(query.limit) {
            let Ok(repo) = name.parse::<RepoName>() else { continue };
            repositories.push(self.repository_summary(&repo).await?);
        }
        Ok(CatalogPage {
            total: matching.len(),
            offset: query.offset,
            repositories,
            namespaces,
        })
    }

    async fn repository_summary(&self, name: &RepoName) -> Result<RepositorySummary> {
        let tags = self.tag_links(name).await?;
        let newest = tags.iter().max_by_key(|t| (t.pushed, t.name.clone()));
        let size = match newest {
            Some(t) => self.manifest_summary(name, &t.digest).await?.size,
            None => 0,
        };
        Ok(RepositorySummary {
            name: name.to_string(),
            tags: tags.len(),
            last_push: tags.iter().filter_map(|t| t.pushed).max(),
            size,
        })
    }

    /// Every tag of `name` with what it points at and its referrers.
    pub async fn browse_repository(&self, name: &RepoName) -> Result<RepositoryDetail> {
        let links = self.tag_links(name).await?;
        let mut referrers = self.referrers_by_subject(name, links.iter().map(|l| &l.digest)).await?;
        let mut tags = Vec::with_capacity(links.len());
        for link in links {
            let summary = self.manifest_summary(name, &link.digest).await?;
            tags.push(TagDetail {
                referrers: referrers.get(&link.digest).cloned().unwrap_or_default(),
                name: link.name,
                digest: link.digest,
                summary,
                pushed: link.pushed,
            });
        }
        referrers.clear();
        Ok(RepositoryDetail {
            name: name.to_string(),
            read_only: self.source_for(name).is_some(),
            tags,
        })
    }

    /// The tags of `name`, each with its digest and push time, sorted by name.
    /// Stored repositories: one read and one stat per tag; a tag whose link
    /// is missing (a crash mid-write) does not exist.
    pub(crate) async fn tag_links(&self, name: &RepoName) -> Result<Vec<TagLink>> {
        let source = self.source_for(name).cloned();
        let mut names = match &source {
            Some(source) => source.tags(name).await?,
            None => {
                // As `tags` decides what is a repository, without its stat
                // per tag: the head below tells the same.
                let children = self.backend.list(&layout::repository(name)).await?;
                if !children.iter().any(|c| c == "_manifests" || c == "_layers") {
                    return Err(RegistryError::NameUnknown(name.clone()));
                }
                self.backend.list(&layout::tags_dir(name)).await?
            }
        };
        names.sort();
        names.dedup();
        let mut links = Vec::with_capacity(names.len());
        for tag_name in names {
            let Ok(tag) = tag_name.parse::<Tag>() else { continue };
            if let Some(source) = &source {
                let content = source.manifest(name, &Reference::Tag(tag)).await?;
                links.push(TagLink {
                    name: tag_name,
                    digest: content.digest,
                    pushed: None,
                });
                continue;
            }
            let key = layout::tag_current_link(name, &tag);
            let pushed = match self.backend.head(&key).await {
                Ok(meta) => meta.modified.and_then(unix_seconds),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(digest) = self.resolve_tag(name, &tag).await? else {
                continue;
            };
            links.push(TagLink {
                name: tag_name,
                digest,
                pushed,
            });
        }
        Ok(links)
    }

    /// The referrers of each of `subjects` that has any. Stored repositories
    /// list the subjects with referrers once instead of asking per subject.
    pub(crate) async fn referrers_by_subject<'a>(
        &self,
        name: &RepoName,
        subjects: impl Iterator<Item = &'a Digest>,
    ) -> Result<BTreeMap<Digest, Vec<Descriptor>>> {
        let mut wanted: Vec<&Digest> = subjects.collect();
        wanted.sort();
        wanted.dedup();
        if self.source_for(name).is_none() {
            let mut with_referrers = Vec::new();
            for alg in self.backend.list(&layout::referrers_root(name)).await? {
                for hex in self
                    .backend
                    .list(&format!("{}/{alg}", layout::referrers_root(name)))
                    .await?
                {
                    if let Ok(d) = format!("{alg}:{hex}").parse::<Digest>() {
                        with_referrers.push(d);
                    }
                }
            }
            wanted.retain(|d| with_referrers.contains(d));
        }
        let mut found = BTreeMap::new();
        for subject in wanted {
            let index = self.referrers(name, subject, None).await?;
            let list = referrer_descriptors(&index);
            if !list.is_empty() {
                found.insert(subject.clone(), list);
            }
        }
        Ok(found)
    }

    /// The manifest `digest` of `name` summarized, from the cache when seen before.
    pub(crate) async fn manifest_summary(&self, name: &RepoName, digest: &Digest) -> Result<ManifestSummary> {
        if let Some(hit) = self.summaries.get(digest) {
            return Ok(hit);
        }
        match summary::summarize(self, name, digest).await {
            Ok(summary) => {
                self.summaries.insert(digest.clone(), summary.clone());
                Ok(summary)
            }
            // A tag whose manifest is gone (a crash, a damaged file) or that
            // berth cannot read (schema 1, from an old distribution) still
            // shows, as what it is, instead of failing the whole view.
            Err(RegistryError::ManifestUnknown(_)) => Ok(ManifestSummary::unreadable("missing")),
            Err(RegistryError::ManifestInvalid(_)) => Ok(ManifestSummary::unreadable("unreadable")),
            Err(e) => Err(e),
        }
    }
}

/// A tag, what it points at and when it was moved there.
pub(crate) struct TagLink {
    pub name: String,
    pub digest: Digest,
    pub pushed: Option<u64>,
}

/// The descriptors of a referrers index body (as `Registry::referrers` answers).
fn referrer_descriptors(index: &[u8]) -> Vec<Descriptor> {
    #[derive(serde::Deserialize)]
    struct Index {
        #[serde(default)]
        manifests: Vec<Descriptor>,
    }
    serde_json::from_slice::<Index>(index)
        .map(|i| i.manifests)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
