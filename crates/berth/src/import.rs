//! `berth import`: copies the images of an archive into berth's storage
//! through the registry itself (`put_blob` / `put_manifest`), so every digest
//! is verified and the result is exactly what a push would have stored.

use crate::cli::ImportArgs;
use crate::progress::{self, Progress};
use crate::storage::{CommandStorage, DirUse};
use anyhow::{bail, Context};
use berth_registry::sources::{self, ImageSet, Placement};
use berth_registry::{Registry, RegistryConfig};
use berth_spec::{Digest, Manifest, ManifestKind, Reference, RepoName};
use berth_storage::{layout, Backend, FsBackend};
use futures::StreamExt;
use std::sync::Arc;

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    progress::init_cli_logging();
    let placement = match &args.repo {
        Some(r) => Placement::Repo(r.parse().with_context(|| format!("--repo {r:?}"))?),
        None => Placement::AsNamed,
    };
    let set = sources::open_path(&args.archive, &placement)?;
    if set.named().is_empty() {
        bail!(
            "{}: holds no named images to import (give --repo to import unnamed ones)",
            args.archive.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let storage = CommandStorage::open(&args.data, args.storage.as_deref(), &args.s3, DirUse::Create).await?;
        let config = RegistryConfig {
            exclusive_storage: storage.is_exclusive(),
            gc_shared: args.gc_shared.timing(),
            ..RegistryConfig::default()
        };
        let registry = Registry::new(storage.backend(), config);
        let progress = Arc::new(Progress::new());
        for image in set.named() {
            let root = import_tree(&registry, &set, &image.repo, &image.digest, &progress).await?;
            let content = set.manifest_by_digest(&root).expect("imported manifests exist");
            registry
                .put_manifest(
                    &image.repo,
                    &Reference::Tag(image.tag.clone()),
                    Some(&content.media_type),
                    content.bytes.clone(),
                    &[],
                )
                .await
                .with_context(|| format!("storing the manifest of {}:{}", image.repo, image.tag))?;
            if let Some(fs) = storage.fs() {
                tell_the_server(fs).await?;
            }
            println!("imported {}:{} {}", image.repo, image.tag, root);
        }
        Ok(())
    })
}

/// A server of the directory remembers what it read of it (tags, which
/// blobs exist): rewriting this marker tells it to forget, so the image just
/// stored is served within its poll interval. Harmless when no server runs.
async fn tell_the_server(backend: &FsBackend) -> anyhow::Result<()> {
    let stamp = format!(
        "{} {}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    backend
        .put(layout::FS_EXTERNAL_WRITES, stamp.into())
        .await
        .context("telling a running server about the import")
}

/// Imports a manifest's blobs and child manifests (but not the manifest itself)
/// and returns the digest to tag: `digest`, or, when it is an index of which
/// the archive holds exactly one image, that image (saving one platform of a
/// multi-platform image keeps the whole index, which cannot be stored without
/// its other platforms).
async fn import_tree(
    registry: &Registry,
    set: &ImageSet,
    repo: &RepoName,
    digest: &Digest,
    progress: &Arc<Progress>,
) -> anyhow::Result<Digest> {
    let content = set
        .manifest_by_digest(digest)
        .with_context(|| format!("the archive lacks manifest {digest}"))?;
    let manifest = Manifest::parse(&content.bytes, Some(&content.media_type))?;
    match manifest.kind {
        ManifestKind::Image => {
            for blob in manifest.required_blobs() {
                import_blob(registry, set, repo, &blob.digest, progress).await?;
            }
            Ok(digest.clone())
        }
        ManifestKind::Index => {
            let present: Vec<_> = manifest
                .manifests
                .iter()
                .filter(|c| set.manifest_by_digest(&c.digest).is_some())
                .collect();
            if present.len() < manifest.manifests.len() {
                if present.len() == 1 {
                    tracing::warn!(index = %digest, image = %present[0].digest,
                        "the archive holds one platform of a multi-platform image; importing that image alone");
                    return Box::pin(import_tree(registry, set, repo, &present[0].digest, progress)).await;
                }
                bail!(
                    "index {digest} lists {} manifests but the archive holds {}",
                    manifest.manifests.len(),
                    present.len()
                );
            }
            for child in present {
                let child_root = Box::pin(import_tree(registry, set, repo, &child.digest, progress)).await?;
                let c = set.manifest_by_digest(&child_root).expect("present");
                registry
                    .put_manifest(
                        repo,
                        &Reference::Digest(child_root.clone()),
                        Some(&c.media_type),
                        c.bytes.clone(),
                        &[],
                    )
                    .await
                    .with_context(|| format!("storing manifest {child_root} in {repo}"))?;
            }
            Ok(digest.clone())
        }
    }
}

async fn import_blob(
    registry: &Registry,
    set: &ImageSet,
    repo: &RepoName,
    digest: &Digest,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    if registry.get_blob(repo, digest, None, true).await.is_ok() {
        progress.note(&format!("  {}  already present", progress::short(digest)));
        return Ok(());
    }
    if !set.has_blob(digest) {
        bail!("the archive lacks blob {digest}, which {repo} needs");
    }
    let (size, body) = set.open_for_copy(digest).await?;
    let label = progress::short(digest);
    let progress = progress.clone();
    let mut done = 0u64;
    let stream = sources::body_stream(body)
        .inspect(move |chunk| {
            if let Ok(c) = chunk {
                done += c.len() as u64;
                progress.bytes(&label, done, size);
            }
        })
        .boxed();
    registry
        .put_blob(repo, digest, stream)
        .await
        .with_context(|| format!("importing blob {digest} into {repo}"))?;
    Ok(())
}
