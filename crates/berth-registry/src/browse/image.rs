//! One image (or index, or artifact) in detail: its manifest, config, layers
//! with the history lines that made them, children of an index, referrers.

use super::summary::{self, is_image_config, platform_string, ManifestSummary};
use crate::{Registry, Result};
use berth_spec::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct ImageDetail {
    pub name: String,
    pub digest: Digest,
    #[serde(flatten)]
    pub summary: ManifestSummary,
    /// The manifest's exact bytes, as text.
    pub manifest: String,
    /// The repository's tags that point at this manifest, sorted.
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// What this manifest refers to, for a signature, SBOM or attestation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// The runtime config of an image (absent for indexes and artifacts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<ImageConfig>,
    /// The config blob's descriptor (any media type).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_descriptor: Option<Descriptor>,
    pub layers: Vec<ImageLayer>,
    pub history: Vec<ImageHistory>,
    /// The children of an index: the multi-arch matrix.
    pub manifests: Vec<IndexEntry>,
    pub referrers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ImageConfig {
    pub created: Option<String>,
    pub author: Option<String>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageLayer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// The history line that made the layer, matched by order among the
    /// history entries that are not `empty_layer`.
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ImageHistory {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexEntry {
    pub digest: Digest,
    pub media_type: String,
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
    /// What pulling this child downloads (its manifest's size when the
    /// repository lacks it).
    pub size: u64,
    /// Whether the repository holds this child.
    pub present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The config file as images carry it (OCI image-spec / docker's image JSON).
#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawRuntime>,
    #[serde(default)]
    history: Vec<ImageHistory>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawRuntime {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    stop_signal: Option<String>,
}

impl Registry {
    /// The manifest `reference` of `name` in detail.
    pub async fn browse_image(&self, name: &RepoName, reference: &Reference) -> Result<ImageDetail> {
        let content = self.get_manifest(name, reference).await?;
        let digest = content.digest.clone();
        // A manifest berth cannot parse (schema 1) is still shown, as text.
        let manifest = Manifest::parse(&content.bytes, Some(&content.media_type)).unwrap_or_else(|_| Manifest {
            media_type: content.media_type.clone(),
            kind: ManifestKind::Image,
            config: None,
            layers: Vec::new(),
            manifests: Vec::new(),
            subject: None,
            artifact_type: None,
            annotations: None,
        });
        let summary = self.manifest_summary(name, &digest).await?;
        let tags = self
            .tag_links(name)
            .await?
            .into_iter()
            .filter(|t| t.digest == digest)
            .map(|t| t.name)
            .collect();
        let referrers = self
            .referrers_by_subject(name, std::iter::once(&digest))
            .await?
            .remove(&digest)
            .unwrap_or_default();

        let mut config = None;
        let mut history = Vec::new();
        if let Some(c) = manifest.config.as_ref().filter(|c| is_image_config(c)) {
            if let Some(raw) = summary::read_json::<RawConfig>(self, name, c).await? {
                history = raw.history;
                let rt = raw.config.unwrap_or_default();
                config = Some(ImageConfig {
                    created: raw.created,
                    author: raw.author,
                    os: raw.os,
                    architecture: raw.architecture,
                    variant: raw.variant,
                    user: rt.user.filter(|u| !u.is_empty()),
                    working_dir: rt.working_dir.filter(|w| !w.is_empty()),
                    env: rt.env.unwrap_or_default(),
                    entrypoint: rt.entrypoint,
                    cmd: rt.cmd,
                    exposed_ports: rt.exposed_ports.unwrap_or_default().into_keys().collect(),
                    labels: rt.labels.unwrap_or_default(),
                    stop_signal: rt.stop_signal,
                });
            }
        }
        let mut made_by = history.iter().filter(|h| !h.empty_layer);
        let layers = manifest
            .layers
            .iter()
            .map(|l| ImageLayer {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
                created_by: made_by.next().and_then(|h| h.created_by.clone()),
            })
            .collect();

        let mut manifests = Vec::new();
        if manifest.kind == ManifestKind::Index {
            for child in &manifest.manifests {
                let present = self
                    .exists(&berth_storage::layout::manifest_revision_link(name, &child.digest))
                    .await?
                    || self.source_for(name).is_some();
                manifests.push(IndexEntry {
                    digest: child.digest.clone(),
                    media_type: child.media_type.clone(),
                    platform: child.platform.as_ref().map(platform_string),
                    size: summary::child_size(self, name, child).await?,
                    present,
                    annotations: child.annotations.clone(),
                });
            }
        }

        Ok(ImageDetail {
            name: name.to_string(),
            digest,
            summary,
            manifest: String::from_utf8_lossy(&content.bytes).into_owned(),
            tags,
            annotations: manifest.annotations.clone(),
            subject: manifest.subject.clone(),
            config,
            config_descriptor: manifest.config.clone(),
            layers,
            history,
            manifests,
            referrers,
        })
    }
}
