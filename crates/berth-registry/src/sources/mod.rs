//! Read-only image sources: berth's own image, and images found in OCI image
//! layouts, OCI layout tar archives and `docker save` tarballs.
//!
//! Every source is loaded into an [`ImageSet`]: the manifests (small, kept in
//! memory and verified against their digests when loaded) and where each blob
//! lies (a file, or a region of a tar archive, served in place).
//!
//! Blob contents are verified lazily: loading an archive reads only its tar
//! headers and JSON documents, so start-up costs the same for a 10 MB and a
//! 10 GB archive. Each blob is hashed once, before its first byte is served
//! (concurrent first requests wait for the same hash); a blob whose bytes do
//! not match its digest is never served. `berth serve` additionally hashes
//! every blob of a `--source` in the background after start, so corruption is
//! reported early instead of at the first pull.

pub mod docker_archive;
pub mod image_builder;
pub mod naming;
pub mod oci_layout;
pub mod self_image;
pub mod tar_index;

pub use naming::Placement;
pub use self_image::SelfImageSource;

use crate::{BlobContent, ImageSource, ManifestContent, RegistryError, Result};
use async_trait::async_trait;
use berth_spec::range::ByteRange;
use berth_spec::{Descriptor, Digest, Manifest, ManifestKind, Reference, RepoName, Tag};
use berth_storage::{Backend, ByteStream, ObjectBody};
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tar_index::TarIndex;

/// Why a source could not be loaded; the message names the file and the problem.
#[derive(Debug, Clone)]
pub struct SourceError(String);

impl SourceError {
    pub fn new(msg: impl Into<String>) -> SourceError {
        SourceError(msg.into())
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceError {}

/// A byte range of a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl Region {
    fn open(&self, range: Range<u64>) -> std::io::Result<ObjectBody> {
        let file = std::fs::File::open(&self.path)?;
        Ok(ObjectBody::File {
            file,
            offset: self.offset + range.start,
            len: range.end - range.start,
        })
    }

    fn read_all(&self) -> std::io::Result<Vec<u8>> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity(self.len as usize);
        file.take(self.len).read_to_end(&mut buf)?;
        if buf.len() as u64 != self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file is shorter than its index says",
            ));
        }
        Ok(buf)
    }

    /// Hashes the region (blocking; run it off the async threads). Gives up
    /// with `Interrupted` once `alive` has no strong references left.
    pub fn digest(&self, algorithm: berth_spec::Algorithm, alive: std::sync::Weak<()>) -> std::io::Result<Digest> {
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut reader = file.take(self.len);
        let mut h = algorithm.digester();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            if alive.strong_count() == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "no longer wanted"));
            }
            let n = reader.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            h.update(&buf[..n]);
        }
        if total != self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file is shorter than its index says",
            ));
        }
        Ok(h.finish())
    }
}

/// The files of an image layout or archive: a directory or an indexed tar.
pub(crate) enum Tree {
    Dir(PathBuf),
    Tar(TarIndex),
}

impl Tree {
    fn path(&self) -> &Path {
        match self {
            Tree::Dir(p) => p,
            Tree::Tar(t) => t.path(),
        }
    }

    fn locate(&self, rel: &str) -> Option<Region> {
        match self {
            Tree::Tar(t) => t.get(rel),
            Tree::Dir(dir) => {
                // Names come from the archive's JSON: never let them leave the directory.
                if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                    return None;
                }
                let path = dir.join(rel);
                let meta = std::fs::metadata(&path).ok()?;
                meta.is_file().then_some(Region {
                    path,
                    offset: 0,
                    len: meta.len(),
                })
            }
        }
    }

    /// Reads a small file (a JSON document); `None` when absent.
    fn read_small(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let Some(region) = self.locate(rel) else {
            return Ok(None);
        };
        if region.len > limit {
            return Err(SourceError::new(format!(
                "{}: {rel} is {} bytes, more than the {limit} expected of it",
                self.path().display(),
                region.len
            )));
        }
        region
            .read_all()
            .map(Some)
            .map_err(|e| SourceError::new(format!("{}: reading {rel}: {e}", self.path().display())))
    }
}

/// Opens whatever is at `path`: an OCI image layout directory, an OCI layout
/// tar archive, or a `docker save` tarball (either format).
pub fn open_path(path: &Path, placement: &Placement) -> Result<ImageSet, SourceError> {
    let meta =
        std::fs::metadata(path).map_err(|e| SourceError::new(format!("{}: cannot read: {e}", path.display())))?;
    let tree = if meta.is_dir() {
        Tree::Dir(path.to_owned())
    } else {
        Tree::Tar(TarIndex::open(path)?)
    };
    let mut builder = ImageSetBuilder::new(path.display().to_string());
    if tree.locate("index.json").is_some() {
        // Newer `docker save` writes an OCI layout next to its manifest.json;
        // the layout's manifests are the registry's own, so it wins.
        oci_layout::load(&tree, &mut builder, placement)?;
    } else if tree.locate("manifest.json").is_some() {
        docker_archive::load(&tree, &mut builder, placement)?;
    } else {
        return Err(SourceError::new(format!(
            "{}: neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
            path.display()
        )));
    }
    Ok(builder.build())
}

/// Where a blob's bytes are.
pub enum BlobLocation {
    Bytes(Bytes),
    File(Region),
    /// An object of berth's own storage (the cached self image).
    Backend {
        backend: Arc<dyn Backend>,
        key: String,
        len: u64,
    },
}

impl BlobLocation {
    fn len(&self) -> u64 {
        match self {
            BlobLocation::Bytes(b) => b.len() as u64,
            BlobLocation::File(r) => r.len,
            BlobLocation::Backend { len, .. } => *len,
        }
    }
}

struct Blob {
    location: BlobLocation,
    /// Set once the bytes were hashed: whether they match the digest.
    verified: tokio::sync::OnceCell<bool>,
}

/// An image by the name the archive gives it, placed in a repository.
#[derive(Debug, Clone)]
pub struct NamedImage {
    pub repo: RepoName,
    pub tag: Tag,
    pub digest: Digest,
}

#[derive(Default)]
struct RepoImages {
    tags: BTreeMap<String, Digest>,
    /// Every manifest and blob readable from the repository.
    reachable: HashSet<Digest>,
    /// The repository's manifests that have a subject, by subject, sorted by digest.
    referrers: HashMap<Digest, Vec<Descriptor>>,
}

/// The images of one source, ready to serve.
pub struct ImageSet {
    describe: String,
    repos: BTreeMap<RepoName, RepoImages>,
    manifests: HashMap<Digest, ManifestContent>,
    blobs: HashMap<Digest, Blob>,
    named: Vec<NamedImage>,
}

pub struct ImageSetBuilder {
    describe: String,
    manifests: HashMap<Digest, ManifestContent>,
    blobs: HashMap<Digest, Blob>,
    named: Vec<NamedImage>,
    roots: Vec<(RepoName, Digest)>,
}

impl ImageSetBuilder {
    pub fn new(describe: String) -> ImageSetBuilder {
        ImageSetBuilder {
            describe,
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            named: Vec::new(),
            roots: Vec::new(),
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Adds a manifest; its digest is that of `bytes`, so it is right by construction.
    pub fn add_manifest(&mut self, bytes: Bytes, media_type: String) -> Digest {
        let digest = Digest::sha256_of(&bytes);
        self.manifests.entry(digest.clone()).or_insert(ManifestContent {
            digest: digest.clone(),
            media_type,
            bytes,
        });
        digest
    }

    pub fn has_manifest(&self, digest: &Digest) -> bool {
        self.manifests.contains_key(digest)
    }

    /// Adds a blob. In-memory bytes are checked now; other locations when first served.
    pub fn add_blob(&mut self, digest: Digest, location: BlobLocation) -> Result<(), SourceError> {
        let verified = tokio::sync::OnceCell::new();
        if let BlobLocation::Bytes(b) = &location {
            let mut h = digest.algorithm().digester();
            h.update(b);
            if h.finish() != digest {
                return Err(SourceError::new(format!(
                    "{}: the bytes of {digest} do not match that digest",
                    self.describe
                )));
            }
            let _ = verified.set(true);
        }
        self.blobs.insert(digest, Blob { location, verified });
        Ok(())
    }

    /// Marks a blob whose bytes were already hashed (the self image's layer).
    pub fn add_verified_blob(&mut self, digest: Digest, location: BlobLocation) {
        let verified = tokio::sync::OnceCell::new();
        let _ = verified.set(true);
        self.blobs.insert(digest, Blob { location, verified });
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    pub fn name(&mut self, repo: RepoName, tag: Tag, digest: Digest) {
        self.named.push(NamedImage { repo, tag, digest });
    }

    /// Makes a manifest (and all it references) readable by digest from `repo`.
    pub fn reach(&mut self, repo: RepoName, digest: Digest) {
        self.roots.push((repo, digest));
    }

    pub fn build(self) -> ImageSet {
        let mut repos: BTreeMap<RepoName, RepoImages> = BTreeMap::new();
        let roots = self
            .named
            .iter()
            .map(|n| (n.repo.clone(), n.digest.clone()))
            .chain(self.roots.iter().cloned());
        for (repo, digest) in roots {
            let entry = repos.entry(repo).or_default();
            let mut pending = vec![digest];
            while let Some(d) = pending.pop() {
                if !entry.reachable.insert(d.clone()) {
                    continue;
                }
                let Some(content) = self.manifests.get(&d) else {
                    continue;
                };
                let Ok(m) = Manifest::parse(&content.bytes, Some(&content.media_type)) else {
                    continue;
                };
                match m.kind {
                    ManifestKind::Index => pending.extend(m.manifests.iter().map(|c| c.digest.clone())),
                    ManifestKind::Image => {
                        entry
                            .reachable
                            .extend(m.config.iter().chain(m.layers.iter()).map(|b| b.digest.clone()));
                    }
                }
                if let Some(s) = &m.subject {
                    entry.reachable.insert(s.digest.clone());
                    let descriptor = m.referrer_descriptor(d.clone(), content.bytes.len() as u64);
                    entry.referrers.entry(s.digest.clone()).or_default().push(descriptor);
                }
            }
        }
        for n in &self.named {
            if let Some(r) = repos.get_mut(&n.repo) {
                r.tags.insert(n.tag.to_string(), n.digest.clone());
            }
        }
        for r in repos.values_mut() {
            for list in r.referrers.values_mut() {
                list.sort_by(|a, b| a.digest.cmp(&b.digest));
            }
        }
        ImageSet {
            describe: self.describe,
            repos,
            manifests: self.manifests,
            blobs: self.blobs,
            named: self.named,
        }
    }
}

impl fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageSet")
            .field("describe", &self.describe)
            .field("repositories", &self.repos.keys().collect::<Vec<_>>())
            .field("manifests", &self.manifests.len())
            .field("blobs", &self.blobs.len())
            .finish()
    }
}

impl ImageSet {
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// The images the archive names, in the order it lists them.
    pub fn named(&self) -> &[NamedImage] {
        &self.named
    }

    pub fn repositories(&self) -> Vec<RepoName> {
        self.repos.keys().cloned().collect()
    }

    pub fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        match self.repos.get(name) {
            Some(r) => Ok(r.tags.keys().cloned().collect()),
            None => Err(RegistryError::NameUnknown(name.clone())),
        }
    }

    pub fn manifest_by_digest(&self, digest: &Digest) -> Option<&ManifestContent> {
        self.manifests.get(digest)
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest)
    }

    /// Every blob (not manifest) of the set.
    pub fn blob_digests(&self) -> Vec<Digest> {
        let mut v: Vec<Digest> = self.blobs.keys().cloned().collect();
        v.sort();
        v
    }

    pub fn manifest(&self, name: &RepoName, reference: &Reference) -> Result<ManifestContent> {
        let unknown = || RegistryError::ManifestUnknown(reference.to_string());
        let repo = self.repos.get(name).ok_or_else(unknown)?;
        let digest = match reference {
            Reference::Tag(t) => repo.tags.get(t.as_str()).ok_or_else(unknown)?,
            Reference::Digest(d) if repo.reachable.contains(d) => d,
            Reference::Digest(_) => return Err(unknown()),
        };
        self.manifests.get(digest).cloned().ok_or_else(unknown)
    }

    /// The manifests of `name` that name `subject` as theirs, sorted by digest.
    pub fn referrers(&self, name: &RepoName, subject: &Digest) -> Vec<Descriptor> {
        self.repos
            .get(name)
            .and_then(|r| r.referrers.get(subject))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the blob's bytes match its digest, hashing them on first use.
    pub async fn verify(&self, digest: &Digest) -> bool {
        let Some(blob) = self.blobs.get(digest) else {
            return false;
        };
        *blob
            .verified
            .get_or_init(|| async {
                let result = match &blob.location {
                    BlobLocation::File(region) => {
                        let region = region.clone();
                        let alg = digest.algorithm();
                        // Dropped with this future, which stops the hashing
                        // (a runtime shutting down waits for blocking tasks).
                        let alive = Arc::new(());
                        let weak = Arc::downgrade(&alive);
                        let r = tokio::task::spawn_blocking(move || region.digest(alg, weak)).await;
                        drop(alive);
                        std::future::ready(r)
                            .await
                            .map_err(std::io::Error::other)
                            .and_then(|r| r)
                    }
                    BlobLocation::Backend { backend, key, .. } => hash_backend(backend.as_ref(), key, digest).await,
                    BlobLocation::Bytes(b) => Ok(Digest::sha256_of(b)),
                };
                match result {
                    Ok(actual) if &actual == digest => true,
                    Ok(actual) => {
                        tracing::error!(source = %self.describe, blob = %digest, %actual,
                            "blob does not match its digest; it will not be served");
                        false
                    }
                    Err(e) => {
                        tracing::error!(source = %self.describe, blob = %digest, error = %e,
                            "blob cannot be read; it will not be served");
                        false
                    }
                }
            })
            .await
    }

    /// Hashes every blob not yet verified; returns the digests that failed.
    pub async fn verify_all(&self) -> Vec<Digest> {
        let mut failed = Vec::new();
        for d in self.blob_digests() {
            if !self.verify(&d).await {
                failed.push(d);
            }
        }
        failed
    }

    /// The size of a blob (or manifest) and, verified, a body for `range` of it.
    pub async fn open(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<(u64, ObjectBody)> {
        self.open_inner(digest, range, true).await
    }

    /// As [`open`](Self::open) but without hashing first: for consumers that
    /// verify while they read (`Registry::put_blob` does), saving a pass.
    pub async fn open_for_copy(&self, digest: &Digest) -> Result<(u64, ObjectBody)> {
        self.open_inner(digest, None, false).await
    }

    async fn open_inner(&self, digest: &Digest, range: Option<Range<u64>>, verify: bool) -> Result<(u64, ObjectBody)> {
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        if let Some(m) = self.manifests.get(digest) {
            let size = m.bytes.len() as u64;
            let r = range.unwrap_or(0..size);
            let bytes = m.bytes.slice(r.start as usize..r.end as usize);
            return Ok((size, bytes_body(bytes)));
        }
        let blob = self.blobs.get(digest).ok_or_else(unknown)?;
        if verify && !self.verify(digest).await {
            return Err(unknown());
        }
        let size = blob.location.len();
        let r = range.unwrap_or(0..size);
        let body = match &blob.location {
            BlobLocation::Bytes(b) => bytes_body(b.slice(r.start as usize..r.end as usize)),
            BlobLocation::File(region) => region.open(r).map_err(|e| {
                tracing::error!(source = %self.describe, blob = %digest, error = %e, "opening a blob failed");
                unknown()
            })?,
            BlobLocation::Backend { backend, key, .. } => backend.open(key, Some(r)).await?,
        };
        Ok((size, body))
    }

    fn size_of(&self, digest: &Digest) -> Option<u64> {
        if let Some(m) = self.manifests.get(digest) {
            return Some(m.bytes.len() as u64);
        }
        self.blobs.get(digest).map(|b| b.location.len())
    }

    pub async fn blob(&self, name: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobContent> {
        let unknown = || RegistryError::BlobUnknown(digest.clone());
        let repo = self.repos.get(name).ok_or_else(unknown)?;
        if !repo.reachable.contains(digest) {
            return Err(unknown());
        }
        let size = self.size_of(digest).ok_or_else(unknown)?;
        let range = match range {
            None => 0..size,
            Some(r) => r.resolve(size).ok_or(RegistryError::RangeNotSatisfiable { size })?,
        };
        let (_, body) = self.open(digest, Some(range.clone())).await?;
        Ok(BlobContent {
            size,
            range,
            body: Some(body),
            redirect: None,
        })
    }
}

fn bytes_body(bytes: Bytes) -> ObjectBody {
    let len = bytes.len() as u64;
    ObjectBody::Stream {
        stream: futures::stream::once(async move { Ok(bytes) }).boxed(),
        len,
    }
}

async fn hash_backend(backend: &dyn Backend, key: &str, digest: &Digest) -> std::io::Result<Digest> {
    let body = backend.open(key, None).await.map_err(std::io::Error::other)?;
    let mut h = digest.algorithm().digester();
    let mut stream = body_stream(body);
    while let Some(chunk) = stream.next().await {
        h.update(&chunk?);
    }
    Ok(h.finish())
}

/// Streams an object body in chunks, reading files on blocking threads.
pub fn body_stream(body: ObjectBody) -> ByteStream {
    body.into_stream(1 << 20)
}

/// A `--source`: the images of a layout or archive, served read-only under a prefix.
pub struct ArchiveSource {
    prefix: String,
    set: ImageSet,
}

impl ArchiveSource {
    /// Loads the layout or archive at `path` (blocking: reads its index and JSON documents).
    pub fn open(prefix: RepoName, path: &Path) -> Result<ArchiveSource, SourceError> {
        let set = open_path(path, &Placement::Prefix(prefix.clone()))?;
        Ok(ArchiveSource {
            prefix: prefix.to_string(),
            set,
        })
    }

    pub fn images(&self) -> &ImageSet {
        &self.set
    }
}

#[async_trait]
impl ImageSource for ArchiveSource {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn describe(&self) -> String {
        self.set.describe.clone()
    }

    async fn repositories(&self) -> Result<Vec<RepoName>> {
        Ok(self.set.repositories())
    }

    async fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        self.set.tags(name)
    }

    async fn manifest(&self, name: &RepoName, reference: &Reference) -> Result<ManifestContent> {
        self.set.manifest(name, reference)
    }

    async fn blob(&self, name: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobContent> {
        self.set.blob(name, digest, range).await
    }

    async fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        Ok(self.set.referrers(name, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::media_type;
    use serde_json::json;

    fn write_blob(dir: &Path, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        d
    }

    /// An OCI layout with one image (`ref_name`) and returns (manifest, layer) digests.
    fn layout(dir: &Path, ref_name: &str) -> (Digest, Digest) {
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layer = write_blob(dir, b"not really a tar, but bytes with a digest");
        let config = write_blob(
            dir,
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}"#,
        );
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": media_type::OCI_MANIFEST,
            "config": {"mediaType": media_type::OCI_CONFIG, "digest": config, "size": 64},
            "layers": [{"mediaType": media_type::OCI_LAYER_GZIP, "digest": layer, "size": 41}],
        }))
        .unwrap();
        let m = write_blob(dir, &manifest);
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": media_type::OCI_MANIFEST, "digest": m, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": ref_name},
        }]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        (m, layer)
    }

    #[tokio::test]
    async fn layout_directory_is_served_by_name_and_verified_before_serving() {
        let dir = tempfile::tempdir().unwrap();
        let (m, layer) = layout(dir.path(), "latest");
        let prefix: RepoName = "local".parse().unwrap();
        let set = open_path(dir.path(), &Placement::Prefix(prefix.clone())).unwrap();
        assert_eq!(set.repositories(), vec![prefix.clone()]);
        assert_eq!(set.tags(&prefix).unwrap(), vec!["latest".to_owned()]);
        let got = set.manifest(&prefix, &"latest".parse().unwrap()).unwrap();
        assert_eq!(got.digest, m);
        let content = set.blob(&prefix, &layer, None).await.unwrap();
        assert_eq!(content.size, 41);
        let other: RepoName = "local/other".parse().unwrap();
        assert!(set.blob(&other, &layer, None).await.is_err());

        // Same size, other bytes: detected before anything is served.
        std::fs::write(
            dir.path().join("blobs/sha256").join(layer.hex()),
            b"NOT really a tar, but bytes with a digest",
        )
        .unwrap();
        let set = open_path(dir.path(), &Placement::Prefix(prefix.clone())).unwrap();
        assert!(matches!(
            set.blob(&prefix, &layer, None).await,
            Err(RegistryError::BlobUnknown(_))
        ));
        assert_eq!(set.verify_all().await, vec![layer]);
    }

    /// An artifact in a layout whose subject is the layout's image (as `oras
    /// attach --oci-layout` or `cosign save` leave them) is served as its referrer.
    #[tokio::test]
    async fn layout_artifacts_with_a_subject_are_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let (image, _) = layout(dir.path(), "v1");
        let image_size = std::fs::metadata(dir.path().join("blobs/sha256").join(image.hex()))
            .unwrap()
            .len();
        let empty = write_blob(dir.path(), b"{}");
        let document = br#"{"spdxVersion":"SPDX-2.3"}"#;
        let sbom = write_blob(dir.path(), document);
        let artifact = |kind: &str| {
            serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_MANIFEST,
                "artifactType": kind,
                "config": {"mediaType": media_type::OCI_EMPTY, "digest": empty, "size": 2},
                "layers": [{"mediaType": kind, "digest": sbom, "size": document.len()}],
                "subject": {"mediaType": media_type::OCI_MANIFEST, "digest": image, "size": image_size},
                "annotations": {"org.example": kind},
            }))
            .unwrap()
        };
        let (a, b) = (artifact("application/spdx+json"), artifact("application/example"));
        let (da, db) = (write_blob(dir.path(), &a), write_blob(dir.path(), &b));
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        for (d, bytes) in [(&da, &a), (&db, &b)] {
            index["manifests"]
                .as_array_mut()
                .unwrap()
                .push(json!({"mediaType": media_type::OCI_MANIFEST, "digest": d, "size": bytes.len()}));
        }
        std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();

        let name: RepoName = "mirror".parse().unwrap();
        let source = ArchiveSource::open(name.clone(), dir.path()).unwrap();
        let referrers = source.referrers(&name, &image).await.unwrap();
        let mut expected = vec![
            (da.clone(), "application/spdx+json"),
            (db.clone(), "application/example"),
        ];
        expected.sort();
        assert_eq!(
            referrers
                .iter()
                .map(|r| (r.digest.clone(), r.artifact_type.as_deref().unwrap()))
                .collect::<Vec<_>>(),
            expected
        );
        for r in &referrers {
            assert_eq!(r.media_type, media_type::OCI_MANIFEST);
            assert_eq!(
                r.annotations.as_ref().unwrap()["org.example"],
                r.artifact_type.clone().unwrap()
            );
            let m = source
                .manifest(&name, &Reference::Digest(r.digest.clone()))
                .await
                .unwrap();
            assert_eq!(m.bytes.len() as u64, r.size);
        }
        assert!(source.blob(&name, &sbom, None).await.is_ok());
        assert!(source.referrers(&name, &da).await.unwrap().is_empty());
        assert!(source
            .referrers(&"other".parse().unwrap(), &image)
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn damaged_layouts_are_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (m, layer) = layout(dir.path(), "app:1");
        let placement = Placement::Prefix("p".parse().unwrap());
        let set = open_path(dir.path(), &placement).unwrap();
        assert_eq!(set.named()[0].repo.as_str(), "p/app");

        // A blob of the wrong size (truncated).
        std::fs::write(dir.path().join("blobs/sha256").join(layer.hex()), b"short").unwrap();
        let err = open_path(dir.path(), &placement).unwrap_err().to_string();
        assert!(
            err.contains(&dir.path().display().to_string()) && err.contains("truncated"),
            "{err}"
        );

        // A manifest whose bytes do not match its digest.
        std::fs::write(dir.path().join("blobs/sha256").join(m.hex()), b"{}").unwrap();
        let err = open_path(dir.path(), &placement).unwrap_err().to_string();
        assert!(err.contains(&m.to_string()), "{err}");

        std::fs::write(dir.path().join("index.json"), b"{not json").unwrap();
        let err = open_path(dir.path(), &placement).unwrap_err().to_string();
        assert!(err.contains("index.json"), "{err}");

        let empty = tempfile::tempdir().unwrap();
        let err = open_path(empty.path(), &placement).unwrap_err().to_string();
        assert!(err.contains("neither an OCI image layout"), "{err}");
    }
}
