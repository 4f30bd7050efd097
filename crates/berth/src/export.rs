//! `berth export`: writes images from berth's storage to an OCI image layout
//! tar archive.
//!
//! The archive holds `oci-layout`, `index.json` (one entry per image, named
//! with containerd's `io.containerd.image.name` and the OCI ref name) and
//! `blobs/`, every platform of a multi-platform image included. It also holds
//! docker's classic `manifest.json` (for each image the manifest of the host's
//! platform), so `docker load` of any version takes it too. Tar headers are
//! fixed (mtime 0, uid/gid 0), so exporting the same images twice gives the
//! same bytes. The archive is written next to its final name and renamed into
//! place only when complete; every blob is hashed as it is written.

use crate::cli::ExportArgs;
use crate::progress::{self, Progress};
use crate::storage::{CommandStorage, DirUse};
use anyhow::{bail, Context};
use berth_registry::sources::image_builder::goarch;
use berth_registry::sources::oci_layout::{blob_path, CONTAINERD_NAME, REF_NAME};
use berth_registry::{ManifestContent, Registry, RegistryConfig};
use berth_spec::{media_type, Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName};
use berth_storage::ObjectBody;
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

/// One image to export, resolved.
struct Root {
    repo: RepoName,
    tag: Option<String>,
    manifest: ManifestContent,
    /// The image manifest docker's manifest.json describes (the host's platform).
    docker_image: Option<Digest>,
}

/// Something to write under `blobs/`.
enum Item {
    Manifest(ManifestContent),
    Blob { repo: RepoName, digest: Digest, size: u64 },
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    progress::init_cli_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let handle = runtime.handle().clone();
    let storage = runtime.block_on(CommandStorage::open(
        &args.data,
        args.storage.as_deref(),
        &args.s3,
        DirUse::Existing,
    ))?;
    let config = RegistryConfig {
        exclusive_storage: storage.is_exclusive(),
        ..RegistryConfig::default()
    };
    let registry = Arc::new(Registry::new(storage.backend(), config));
    let (roots, items) = runtime.block_on(collect(&registry, &args.images))?;
    let out = args.output.clone();
    let staged = out.with_file_name(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|n| n.to_str()).unwrap_or("export"),
        std::process::id()
    ));
    let result = write_archive(&handle, &registry, &staged, &roots, &items);
    match result {
        Ok(()) => std::fs::rename(&staged, &out).with_context(|| format!("renaming into {}", out.display()))?,
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            return Err(e);
        }
    }
    for r in &roots {
        match &r.tag {
            Some(t) => println!("exported {}:{} {}", r.repo, t, r.manifest.digest),
            None => println!("exported {}@{}", r.repo, r.manifest.digest),
        }
    }
    Ok(())
}

fn parse_image(s: &str) -> anyhow::Result<(RepoName, Reference)> {
    let (name, reference) = if let Some((n, d)) = s.split_once('@') {
        (
            n,
            Reference::Digest(d.parse().with_context(|| format!("{s:?}: bad digest"))?),
        )
    } else {
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[last_slash..].rfind(':') {
            Some(i) => (
                &s[..last_slash + i],
                Reference::Tag(
                    s[last_slash + i + 1..]
                        .parse()
                        .with_context(|| format!("{s:?}: bad tag"))?,
                ),
            ),
            None => (s, Reference::Tag("latest".parse().expect("valid tag"))),
        }
    };
    Ok((
        name.parse().with_context(|| format!("{s:?}: bad repository name"))?,
        reference,
    ))
}

async fn collect(registry: &Registry, images: &[String]) -> anyhow::Result<(Vec<Root>, Vec<Item>)> {
    let mut roots = Vec::new();
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    for image in images {
        let (repo, reference) = parse_image(image)?;
        let manifest = registry
            .get_manifest(&repo, &reference)
            .await
            .with_context(|| format!("{image}: not found"))?;
        let docker_image = walk(registry, &repo, &manifest, &mut items, &mut seen).await?;
        roots.push(Root {
            tag: match &reference {
                Reference::Tag(t) => Some(t.to_string()),
                Reference::Digest(_) => None,
            },
            repo,
            manifest,
            docker_image,
        });
    }
    Ok((roots, items))
}

/// Adds a manifest and all it references to `items` (each digest once);
/// returns the image manifest for the host platform, if any.
async fn walk(
    registry: &Registry,
    repo: &RepoName,
    content: &ManifestContent,
    items: &mut Vec<Item>,
    seen: &mut HashSet<Digest>,
) -> anyhow::Result<Option<Digest>> {
    let manifest = Manifest::parse(&content.bytes, Some(&content.media_type))
        .with_context(|| format!("{repo}: manifest {}", content.digest))?;
    let first_visit = seen.insert(content.digest.clone());
    if first_visit {
        items.push(Item::Manifest(content.clone()));
    }
    match manifest.kind {
        ManifestKind::Image => {
            if first_visit {
                for blob in manifest.required_blobs() {
                    if seen.insert(blob.digest.clone()) {
                        let found = registry
                            .get_blob(repo, &blob.digest, None, true)
                            .await
                            .with_context(|| format!("{repo}: blob {} of {}", blob.digest, content.digest))?;
                        items.push(Item::Blob {
                            repo: repo.clone(),
                            digest: blob.digest.clone(),
                            size: found.size,
                        });
                    }
                }
            }
            let docker_ok = manifest
                .config
                .as_ref()
                .is_some_and(|c| c.media_type == media_type::DOCKER_CONFIG || c.media_type == media_type::OCI_CONFIG);
            Ok(docker_ok.then(|| content.digest.clone()))
        }
        ManifestKind::Index => {
            let mut host = None;
            let mut first = None;
            for child in &manifest.manifests {
                let c = registry
                    .get_manifest(repo, &Reference::Digest(child.digest.clone()))
                    .await
                    .with_context(|| format!("{repo}: manifest {} of index {}", child.digest, content.digest))?;
                let image = Box::pin(walk(registry, repo, &c, items, seen)).await?;
                if first.is_none() {
                    first = image.clone();
                }
                if host.is_none() && is_host_platform(child) {
                    host = image;
                }
            }
            Ok(host.or(first))
        }
    }
}

fn is_host_platform(d: &Descriptor) -> bool {
    d.platform
        .as_ref()
        .is_some_and(|p| p.os == std::env::consts::OS && p.architecture == goarch())
}

/// docker's way of naming `repo:tag`: fully qualified on Docker Hub. Taking
/// the archive back in (`berth import`) strips the same prefix again.
fn docker_name(repo: &RepoName, tag: &str) -> String {
    if repo.as_str().contains('/') {
        format!("docker.io/{repo}:{tag}")
    } else {
        format!("docker.io/library/{repo}:{tag}")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

fn header(path: &str, size: u64) -> anyhow::Result<tar::Header> {
    Ok(berth_registry::sources::image_builder::fixed_header(path, size, 0o644)?)
}

fn write_archive(
    handle: &tokio::runtime::Handle,
    registry: &Registry,
    path: &Path,
    roots: &[Root],
    items: &[Item],
) -> anyhow::Result<()> {
    let progress = Progress::new();
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    tar.append(&header("oci-layout", layout.len() as u64)?, &layout[..])?;
    let mut blob_dirs = BTreeMap::new();
    for item in items {
        let digest = match item {
            Item::Manifest(m) => &m.digest,
            Item::Blob { digest, .. } => digest,
        };
        blob_dirs.insert(format!("blobs/{}", digest.algorithm()), ());
    }
    for dir in blob_dirs.keys() {
        for d in ["blobs", dir.as_str()] {
            let mut h = header(&format!("{d}/"), 0)?;
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_cksum();
            tar.append(&h, std::io::empty())?;
        }
    }
    for item in items {
        match item {
            Item::Manifest(m) => {
                tar.append(&header(&blob_path(&m.digest), m.bytes.len() as u64)?, &m.bytes[..])?;
            }
            Item::Blob { repo, digest, size } => {
                let label = progress::short(digest);
                let content = handle
                    .block_on(registry.get_blob(repo, digest, None, false))
                    .with_context(|| format!("reading blob {digest} of {repo}"))?;
                if content.size != *size {
                    bail!("blob {digest} of {repo} changed size while exporting");
                }
                let body = content.body.expect("a body was asked for");
                let mut reader = HashingReader {
                    inner: body_reader(handle, body)?,
                    digester: digest.algorithm().digester(),
                    done: 0,
                    total: *size,
                    progress: &progress,
                    label: &label,
                };
                tar.append(&header(&blob_path(digest), *size)?, &mut reader)?;
                if reader.done != *size {
                    bail!("blob {digest} of {repo} is shorter than its {size} bytes");
                }
                let actual = reader.digester.finish();
                if &actual != digest {
                    bail!("blob {digest} of {repo} does not match its digest (it is {actual}); storage is damaged");
                }
            }
        }
    }
    let index = IndexJson {
        schema_version: 2,
        media_type: media_type::OCI_INDEX,
        manifests: roots
            .iter()
            .map(|r| {
                let mut annotations = BTreeMap::new();
                if let Some(t) = &r.tag {
                    annotations.insert(CONTAINERD_NAME.to_owned(), docker_name(&r.repo, t));
                    annotations.insert(REF_NAME.to_owned(), t.clone());
                }
                Descriptor {
                    media_type: r.manifest.media_type.clone(),
                    digest: r.manifest.digest.clone(),
                    size: r.manifest.bytes.len() as u64,
                    urls: Vec::new(),
                    annotations: (!annotations.is_empty()).then_some(annotations),
                    artifact_type: None,
                    platform: None,
                }
            })
            .collect(),
    };
    let index = serde_json::to_vec(&index)?;
    tar.append(&header("index.json", index.len() as u64)?, &index[..])?;

    let mut docker = Vec::new();
    for r in roots {
        let Some(image) = &r.docker_image else { continue };
        let Some(Item::Manifest(m)) = items
            .iter()
            .find(|i| matches!(i, Item::Manifest(m) if &m.digest == image))
        else {
            continue;
        };
        let parsed = Manifest::parse(&m.bytes, Some(&m.media_type))?;
        let Some(config) = parsed.config else { continue };
        docker.push(DockerEntry {
            config: blob_path(&config.digest),
            repo_tags: r.tag.iter().map(|t| format!("{}:{t}", r.repo)).collect(),
            layers: parsed.layers.iter().map(|l| blob_path(&l.digest)).collect(),
        });
    }
    if !docker.is_empty() {
        let docker = serde_json::to_vec(&docker)?;
        tar.append(&header("manifest.json", docker.len() as u64)?, &docker[..])?;
    }
    let file = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// A blocking reader over a stored blob.
fn body_reader<'a>(handle: &'a tokio::runtime::Handle, body: ObjectBody) -> anyhow::Result<Box<dyn Read + 'a>> {
    Ok(match body {
        ObjectBody::File { mut file, offset, len } => {
            file.seek(SeekFrom::Start(offset))?;
            Box::new(std::io::BufReader::with_capacity(1 << 20, file.take(len)))
        }
        ObjectBody::Bytes(b) => Box::new(std::io::Cursor::new(b)),
        ObjectBody::Stream { mut stream, .. } => {
            let mut pending = bytes::Bytes::new();
            Box::new(FnReader(move |buf: &mut [u8]| {
                while pending.is_empty() {
                    match handle.block_on(stream.next()) {
                        Some(chunk) => pending = chunk?,
                        None => return Ok(0),
                    }
                }
                let n = pending.len().min(buf.len());
                buf[..n].copy_from_slice(&pending[..n]);
                pending = pending.slice(n..);
                Ok(n)
            }))
        }
    })
}

struct FnReader<F>(F);

impl<F: FnMut(&mut [u8]) -> std::io::Result<usize>> Read for FnReader<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (self.0)(buf)
    }
}

struct HashingReader<'a, R> {
    inner: R,
    digester: berth_spec::Digester,
    done: u64,
    total: u64,
    progress: &'a Progress,
    label: &'a str,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        self.done += n as u64;
        self.progress.bytes(self.label, self.done, self.total);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_arguments() {
        let (r, t) = parse_image("team/app:v1").unwrap();
        assert_eq!((r.as_str(), t.to_string()), ("team/app", "v1".to_owned()));
        let (r, t) = parse_image("app").unwrap();
        assert_eq!((r.as_str(), t.to_string()), ("app", "latest".to_owned()));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let (_, t) = parse_image(&format!("app@{d}")).unwrap();
        assert_eq!(t, Reference::Digest(d.parse().unwrap()));
        assert!(parse_image("Bad:1").is_err());
        assert!(parse_image("app:bad:tag").is_err());
    }

    #[test]
    fn docker_names() {
        assert_eq!(
            docker_name(&"alpine".parse().unwrap(), "1"),
            "docker.io/library/alpine:1"
        );
        assert_eq!(docker_name(&"team/app".parse().unwrap(), "v1"), "docker.io/team/app:v1");
    }
}
