//! What a manifest is at a glance: its kind, size and platforms, cached by
//! digest (a digest's content, and so its summary, never changes).

use crate::{Registry, Result};
use berth_spec::media_type::{DOCKER_CONFIG, OCI_CONFIG};
use berth_spec::{Descriptor, Digest, Manifest, ManifestKind, Platform, Reference, RepoName};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ManifestSummary {
    pub media_type: String,
    /// `image` (a config and layers, or an artifact) or `index` (other
    /// manifests); `missing` or `unreadable` when the manifest cannot be read.
    pub kind: &'static str,
    /// For an image manifest its artifact type (the config's media type unless set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Bytes a pull downloads: config and layers; for an index, those of
    /// every child manifest it holds (a child it lacks counts its manifest only).
    pub size: u64,
    /// `os/architecture[/variant]` of the image, or of each child of an
    /// index (leaving out `unknown/unknown`, buildx's attestation manifests).
    pub platforms: Vec<String>,
}

impl ManifestSummary {
    /// What is shown for a manifest that cannot be summarized (`kind` says why).
    pub(crate) fn unreadable(kind: &'static str) -> ManifestSummary {
        ManifestSummary {
            media_type: String::new(),
            kind,
            artifact_type: None,
            size: 0,
            platforms: Vec::new(),
        }
    }
}

/// Config blobs larger than this are not read for a summary or an image view
/// (real ones are kilobytes; the bound keeps a hostile one out of memory).
pub(crate) const CONFIG_LIMIT: u64 = 4 << 20;

const CACHE_ENTRIES: usize = 50_000;

/// Summaries by manifest digest. Bounded: cleared when full, like the manifest cache.
#[derive(Default)]
pub(crate) struct SummaryCache {
    entries: Mutex<HashMap<Digest, ManifestSummary>>,
}

impl SummaryCache {
    pub(crate) fn get(&self, digest: &Digest) -> Option<ManifestSummary> {
        self.entries.lock().unwrap().get(digest).cloned()
    }

    pub(crate) fn insert(&self, digest: Digest, summary: ManifestSummary) {
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(digest, summary);
    }
}

pub(crate) fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// Whether a config descriptor is an image's runtime config (and not an artifact's).
pub(crate) fn is_image_config(config: &Descriptor) -> bool {
    config.media_type == OCI_CONFIG || config.media_type == DOCKER_CONFIG
}

/// The parsed manifest `digest` of `name`, with its bytes.
pub(crate) async fn load(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
) -> Result<(Manifest, crate::ManifestContent)> {
    let content = reg.get_manifest(name, &Reference::Digest(digest.clone())).await?;
    let manifest = Manifest::parse(&content.bytes, Some(&content.media_type))?;
    Ok((manifest, content))
}

pub(crate) async fn summarize(reg: &Registry, name: &RepoName, digest: &Digest) -> Result<ManifestSummary> {
    let (manifest, content) = load(reg, name, digest).await?;
    match manifest.kind {
        ManifestKind::Image => {
            let (size, platform) = image_size_and_platform(reg, name, &manifest).await?;
            Ok(ManifestSummary {
                media_type: content.media_type,
                kind: "image",
                artifact_type: manifest.artifact_type.clone(),
                size,
                platforms: platform.into_iter().collect(),
            })
        }
        ManifestKind::Index => {
            let mut size = 0;
            let mut platforms = Vec::new();
            for child in &manifest.manifests {
                size += child_size(reg, name, child).await?;
                if let Some(p) = &child.platform {
                    if p.os != "unknown" {
                        platforms.push(platform_string(p));
                    }
                }
            }
            Ok(ManifestSummary {
                media_type: content.media_type,
                kind: "index",
                artifact_type: manifest.artifact_type.clone(),
                size,
                platforms,
            })
        }
    }
}

/// The size an index's child adds: its image's size when the repository
/// holds it, else its manifest's.
pub(crate) async fn child_size(reg: &Registry, name: &RepoName, child: &Descriptor) -> Result<u64> {
    if let Some(hit) = reg.summaries.get(&child.digest) {
        return Ok(hit.size);
    }
    match load(reg, name, &child.digest).await {
        Ok((m, _)) if m.kind == ManifestKind::Image => Ok(image_size_and_platform(reg, name, &m).await?.0),
        Ok(_) => Ok(child.size),
        Err(crate::RegistryError::ManifestUnknown(_)) => Ok(child.size),
        Err(e) => Err(e),
    }
}

/// An image manifest's download size and, when its config says, its platform.
async fn image_size_and_platform(reg: &Registry, name: &RepoName, m: &Manifest) -> Result<(u64, Option<String>)> {
    let size = m.config.iter().chain(&m.layers).map(|d| d.size).sum();
    let platform = match &m.config {
        Some(c) if is_image_config(c) => read_json::<ConfigPlatform>(reg, name, c)
            .await?
            .filter(|p| !p.os.is_empty())
            .map(|p| {
                platform_string(&Platform {
                    os: p.os,
                    architecture: p.architecture,
                    os_version: None,
                    variant: p.variant,
                })
            }),
        _ => None,
    };
    Ok((size, platform))
}

#[derive(serde::Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Reads a small JSON blob (a config) of `name` and parses it; `None` when it
/// is absent, too large, or not the JSON expected.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    reg: &Registry,
    name: &RepoName,
    blob: &Descriptor,
) -> Result<Option<T>> {
    Ok(read_small_blob(reg, name, &blob.digest)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn read_small_blob(reg: &Registry, name: &RepoName, digest: &Digest) -> Result<Option<Bytes>> {
    let stored = reg.source_for(name).is_none();
    // Stored blobs are read whole in one call (cheap for small files); a
    // source's through its stream.
    let content = match reg.get_blob(name, digest, None, stored).await {
        Ok(c) => c,
        Err(crate::RegistryError::BlobUnknown(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if content.size > CONFIG_LIMIT {
        return Ok(None);
    }
    if stored {
        return match reg.backend.get(&berth_storage::layout::blob_data(digest)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        };
    }
    let Some(body) = content.body else { return Ok(None) };
    let mut stream = body.into_stream(64 << 10);
    let mut buf = BytesMut::with_capacity(content.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| berth_storage::StorageError::io(&digest.to_string(), e))?;
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}
