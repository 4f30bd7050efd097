//! The `[[augmentation]]` sections of the config file: images served with
//! extra layers and settings (see `berth_registry::augment`). Each is stored
//! at start (its layers packed from directories or read from tar files) and
//! logged with the prefix that serves it, `aug/<id>/`.

use anyhow::{bail, Context};
use berth_registry::{Augmentation, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AugmentationSection {
    /// What the log calls it (the id is what names it).
    pub name: String,
    /// Directories (packed like the self image's layer: owner 0:0, mtime 0,
    /// sorted) or tar files (gzip-compressed or not), in order.
    #[serde(default)]
    pub layers: Vec<PathBuf>,
    #[serde(default)]
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Checks what `define_all` can check without a registry (for `--check-config`).
pub fn validate(sections: &[AugmentationSection]) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for s in sections {
        if !names.insert(&s.name) {
            bail!("[[augmentation]] {:?} is defined twice", s.name);
        }
        for layer in &s.layers {
            std::fs::metadata(layer)
                .with_context(|| format!("[[augmentation]] {:?}: layer {}", s.name, layer.display()))?;
        }
    }
    Ok(())
}

/// Stores every section's layers and definition; returns (name, id) pairs.
pub async fn define_all(
    registry: &Registry,
    sections: &[AugmentationSection],
) -> anyhow::Result<Vec<(String, String)>> {
    validate(sections)?;
    let mut out = Vec::new();
    for s in sections {
        let what = || format!("[[augmentation]] {:?}", s.name);
        let mut layers = Vec::new();
        for path in &s.layers {
            layers.push(
                registry
                    .store_layer_from_path(path)
                    .await
                    .with_context(|| format!("{}: layer {}", what(), path.display()))?,
            );
        }
        let aug = Augmentation {
            layers,
            env: s.env.clone(),
            entrypoint: s.entrypoint.clone(),
            cmd: s.cmd.clone(),
            working_dir: s.working_dir.clone(),
            labels: s.labels.clone(),
        };
        let id = registry.define_augmentation(&aug).await.with_context(what)?;
        tracing::info!(
            augmentation = %s.name,
            prefix = %format!("{}/{id}/", berth_registry::augment::PREFIX),
            "augmentation defined: pull <registry>/{}/{id}/<image> for <image> with it",
            berth_registry::augment::PREFIX
        );
        out.push((s.name.clone(), id));
    }
    Ok(out)
}
