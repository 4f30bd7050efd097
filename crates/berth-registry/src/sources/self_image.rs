//! berth serves its own running executable as an image (`berth:latest` and
//! `berth:<version>`): pull it from one berth and run it, and the child serves
//! the very same image, byte for byte (the builder is deterministic).
//!
//! Packaging takes a few seconds for a large executable, so it happens in a
//! background task: the server answers at once, and only requests for the
//! self image wait for it. The result is cached in the data directory under
//! the executable's own digest ([`layout::self_image_dir`]), so a restart of
//! the same binary only re-verifies the cache.
//!
//! Documents about the binary (its SBOM, which the binary embeds) are served
//! beside the image as OCI referrers: artifact manifests whose `subject` is
//! the image, listed by `GET /v2/<name>/referrers/<digest>`. They are built as
//! deterministically as the image, so they too depend only on the binary.

use super::image_builder::{self, Layer};
use super::{BlobLocation, ImageSet, ImageSetBuilder};
use crate::{BlobContent, ImageSource, ManifestContent, RegistryError, Result};
use async_trait::async_trait;
use berth_spec::range::ByteRange;
use berth_spec::{media_type, Descriptor, Digest, Reference, RepoName, Tag};
use berth_storage::{layout, Backend};
use bytes::Bytes;
use futures::StreamExt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const LAYER_FILE: &str = "layer.tar.gz";
const CONFIG_FILE: &str = "config.json";
const MANIFEST_FILE: &str = "manifest.json";

type State = Option<Arc<std::result::Result<ImageSet, String>>>;

pub struct SelfImageSource {
    name: RepoName,
    state: watch::Receiver<State>,
}

/// A document attached to the self image as a referrer (berth's SBOM).
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The artifact type, also the media type of the one layer (`application/vnd.cyclonedx+json`).
    pub artifact_type: String,
    /// The file name clients such as oras save the document as.
    pub title: String,
    pub document: Bytes,
}

impl SelfImageSource {
    /// Starts packaging the running executable in the background, as repository
    /// `name`, with `attachments` as its referrers. Must be called inside a tokio runtime.
    pub fn start(name: RepoName, backend: Arc<dyn Backend>, attachments: Vec<Attachment>) -> Arc<SelfImageSource> {
        Self::start_from(name, backend, std::env::current_exe(), attachments)
    }

    /// As [`start`](Self::start), for a given executable (tests).
    pub fn start_from(
        name: RepoName,
        backend: Arc<dyn Backend>,
        executable: std::io::Result<PathBuf>,
        attachments: Vec<Attachment>,
    ) -> Arc<SelfImageSource> {
        // Opened now, so a binary replaced on disk later does not change what is packaged.
        let opened = executable.and_then(|p| File::open(&p).map(|f| (p, f)));
        let (tx, rx) = watch::channel(None);
        let repo = name.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match opened {
                Ok((path, file)) => prepare(&repo, backend, path, file, attachments).await,
                Err(e) => Err(format!("cannot open berth's own executable: {e}")),
            };
            match &result {
                Ok(set) => {
                    let digest = set
                        .manifest(&repo, &Reference::Tag("latest".parse().unwrap()))
                        .map(|m| m.digest);
                    tracing::info!(repository = %repo, digest = %digest.map(|d| d.to_string()).unwrap_or_default(),
                        elapsed_ms = started.elapsed().as_millis() as u64, "self image ready");
                }
                Err(e) => tracing::error!(repository = %repo, error = %e, "berth cannot serve its own image"),
            }
            let _ = tx.send(Some(Arc::new(result)));
        });
        Arc::new(SelfImageSource { name, state: rx })
    }

    pub fn tags() -> Vec<String> {
        vec!["latest".to_owned(), VERSION.to_owned()]
    }

    /// Waits for the image; its manifest digest.
    pub async fn ready(&self) -> std::result::Result<Digest, String> {
        let state = self.wait().await?;
        let set = state.as_ref().as_ref().map_err(|e| e.clone())?;
        set.manifest(&self.name, &Reference::Tag("latest".parse().unwrap()))
            .map(|m| m.digest)
            .map_err(|e| e.to_string())
    }

    async fn wait(&self) -> std::result::Result<Arc<std::result::Result<ImageSet, String>>, String> {
        let mut rx = self.state.clone();
        let v = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| "the self image task ended without a result".to_owned())?;
        Ok(v.clone().expect("waited for Some"))
    }

    async fn images(&self) -> Result<Arc<std::result::Result<ImageSet, String>>> {
        let state = self.wait().await.map_err(RegistryError::Unsupported)?;
        if let Err(e) = state.as_ref() {
            return Err(RegistryError::Unsupported(format!(
                "berth's own image is unavailable: {e}"
            )));
        }
        Ok(state)
    }
}

#[async_trait]
impl ImageSource for SelfImageSource {
    fn prefix(&self) -> &str {
        self.name.as_str()
    }

    fn describe(&self) -> String {
        "berth's own executable (its self image)".to_owned()
    }

    async fn repositories(&self) -> Result<Vec<RepoName>> {
        Ok(vec![self.name.clone()])
    }

    async fn tags(&self, name: &RepoName) -> Result<Vec<String>> {
        if name != &self.name {
            return Err(RegistryError::NameUnknown(name.clone()));
        }
        Ok(Self::tags())
    }

    async fn manifest(&self, name: &RepoName, reference: &Reference) -> Result<ManifestContent> {
        if name != &self.name {
            return Err(RegistryError::ManifestUnknown(reference.to_string()));
        }
        let state = self.images().await?;
        state.as_ref().as_ref().unwrap().manifest(name, reference)
    }

    async fn blob(&self, name: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobContent> {
        if name != &self.name {
            return Err(RegistryError::BlobUnknown(digest.clone()));
        }
        let state = self.images().await?;
        state.as_ref().as_ref().unwrap().blob(name, digest, range).await
    }

    async fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        if name != &self.name {
            return Ok(Vec::new());
        }
        let state = self.images().await?;
        Ok(state.as_ref().as_ref().unwrap().referrers(name, subject))
    }
}

struct Built {
    config: Bytes,
    manifest: Bytes,
    layer: Layer,
}

async fn prepare(
    name: &RepoName,
    backend: Arc<dyn Backend>,
    path: PathBuf,
    file: File,
    attachments: Vec<Attachment>,
) -> std::result::Result<ImageSet, String> {
    // Blocking work stops when this task is dropped (the runtime shutting
    // down), so a server stopped early does not wait for the packaging.
    let alive = Arc::new(());
    let weak = Arc::downgrade(&alive);
    let (file, exe_digest, len) = tokio::task::spawn_blocking(move || hash_executable(file, weak))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let dir = layout::self_image_dir(&exe_digest);
    drop(alive);
    let built = match load_cached(backend.as_ref(), &dir).await {
        Some(built) => built,
        None => build(backend.as_ref(), &dir, file, len).await?,
    };
    let mut b = ImageSetBuilder::new("berth's own executable".to_owned());
    let manifest = b.add_manifest(built.manifest.clone(), media_type::OCI_MANIFEST.to_owned());
    b.add_blob(Digest::sha256_of(&built.config), BlobLocation::Bytes(built.config))
        .map_err(|e| e.to_string())?;
    b.add_verified_blob(
        built.layer.digest.clone(),
        BlobLocation::Backend {
            backend: backend.clone(),
            key: format!("{dir}/{LAYER_FILE}"),
            len: built.layer.size,
        },
    );
    for tag in SelfImageSource::tags() {
        let tag: Tag = tag.parse().map_err(|e| format!("{e}"))?;
        b.name(name.clone(), tag, manifest.clone());
    }
    for a in attachments {
        let artifact = image_builder::artifact_manifest_json(&built.manifest, &a.artifact_type, &a.document, &a.title);
        let empty = Bytes::from_static(image_builder::EMPTY_CONFIG);
        b.add_blob(Digest::sha256_of(&empty), BlobLocation::Bytes(empty))
            .map_err(|e| e.to_string())?;
        b.add_blob(Digest::sha256_of(&a.document), BlobLocation::Bytes(a.document))
            .map_err(|e| e.to_string())?;
        let digest = b.add_manifest(Bytes::from(artifact), media_type::OCI_MANIFEST.to_owned());
        b.reach(name.clone(), digest);
    }
    Ok(b.build())
}

/// The config and manifest of the self image whose layer is `layer`.
fn documents(layer: &Layer) -> (Vec<u8>, Vec<u8>) {
    let config = image_builder::config_json(image_builder::goarch(), std::env::consts::OS, &layer.diff_id);
    let manifest = image_builder::manifest_json(&config, layer);
    (config, manifest)
}

/// The manifest digest of the self image of `executable`, computed without
/// storing anything (`berth self-digest`): what a berth running that
/// executable serves as `berth:latest`, since both build it with the same code.
pub fn manifest_digest(executable: &std::path::Path) -> std::io::Result<Digest> {
    let file = File::open(executable)?;
    let len = file.metadata()?.len();
    let layer = image_builder::write_layer(file, len, std::io::sink())?;
    Ok(Digest::sha256_of(&documents(&layer).1))
}

/// Hashes the executable (the cache key) and checks that it can run alone.
fn hash_executable(mut file: File, alive: std::sync::Weak<()>) -> std::io::Result<(File, Digest, u64)> {
    if image_builder::elf_needs_interpreter(&mut file).unwrap_or(false) {
        tracing::warn!(
            "berth's executable is dynamically linked: its self image will not run in an empty container \
             (build it with crt-static, as the release build is)"
        );
    }
    file.seek(SeekFrom::Start(0))?;
    let mut h = berth_spec::Algorithm::Sha256.digester();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        if alive.strong_count() == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "berth is shutting down",
            ));
        }
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        len += n as u64;
        h.update(&buf[..n]);
    }
    file.seek(SeekFrom::Start(0))?;
    Ok((file, h.finish(), len))
}

/// The cached image, if it is complete and exactly what building would give.
async fn load_cached(backend: &dyn Backend, dir: &str) -> Option<Built> {
    let manifest = backend.get(&format!("{dir}/{MANIFEST_FILE}")).await.ok()?;
    let config = backend.get(&format!("{dir}/{CONFIG_FILE}")).await.ok()?;
    let parsed = berth_spec::Manifest::parse(&manifest, Some(berth_spec::media_type::OCI_MANIFEST)).ok()?;
    let layer_desc = parsed.layers.first()?;
    let v: serde_json::Value = serde_json::from_slice(&config).ok()?;
    let diff_id: Digest = v["rootfs"]["diff_ids"][0].as_str()?.parse().ok()?;
    let layer = Layer {
        digest: layer_desc.digest.clone(),
        size: layer_desc.size,
        diff_id,
    };
    let (expected_config, expected_manifest) = documents(&layer);
    if expected_config != config || expected_manifest != manifest {
        tracing::warn!(
            cache = dir,
            "cached self image differs from what this build makes; rebuilding"
        );
        return None;
    }
    // The layer is checked against both its digest and the diff_id the config
    // names: a damaged cache is rebuilt, never served.
    let key = format!("{dir}/{LAYER_FILE}");
    let body = backend.open(&key, None).await.ok()?;
    if body.len() != layer.size {
        return None;
    }
    let mut stream = super::body_stream(body);
    let mut compressed = berth_spec::Algorithm::Sha256.digester();
    let mut decoder = flate2::write::GzDecoder::new(DigestSink(berth_spec::Algorithm::Sha256.digester()));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.ok()?;
        compressed.update(&chunk);
        decoder.write_all(&chunk).ok()?;
    }
    let uncompressed = decoder.finish().ok()?.0.finish();
    if compressed.finish() != layer.digest || uncompressed != layer.diff_id {
        tracing::warn!(cache = dir, "cached self image layer is damaged; rebuilding");
        return None;
    }
    Some(Built {
        config,
        manifest,
        layer,
    })
}

struct DigestSink(berth_spec::Digester);

impl Write for DigestSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends what is written, in chunks, to the async task that stores it.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
            self.tx
                .blocking_send(chunk)
                .map_err(|_| std::io::Error::other("storing the self image failed"))?;
        }
        Ok(())
    }
}

async fn build(backend: &dyn Backend, dir: &str, file: File, len: u64) -> std::result::Result<Built, String> {
    let started = Instant::now();
    tracing::info!(cache = dir, bytes = len, "packaging berth's own executable as an image");
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let layer = image_builder::write_layer(std::io::BufReader::new(file), len, &mut out)?;
        out.flush()?;
        Ok::<_, std::io::Error>(layer)
    });
    let staged = format!("{dir}/{LAYER_FILE}.tmp-{}", uuid::Uuid::new_v4());
    let store = async {
        let mut w = backend.append(&staged, 0).await.map_err(|e| e.to_string())?;
        while let Some(chunk) = rx.recv().await {
            w.write(chunk).await.map_err(|e| e.to_string())?;
        }
        w.finish().await.map_err(|e| e.to_string())
    };
    let stored = store.await;
    let layer = writer.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string());
    let (stored, layer) = match (stored, layer) {
        (Ok(stored), Ok(layer)) => (stored, layer),
        (Err(e), _) | (_, Err(e)) => {
            let _ = backend.delete(&staged).await;
            return Err(format!("packaging the executable failed: {e}"));
        }
    };
    if stored != layer.size {
        let _ = backend.delete(&staged).await;
        return Err(format!("stored {stored} bytes of a {} byte layer", layer.size));
    }
    backend
        .promote(&staged, &format!("{dir}/{LAYER_FILE}"))
        .await
        .map_err(|e| e.to_string())?;
    let (config, manifest) = documents(&layer);
    let config = Bytes::from(config);
    let manifest = Bytes::from(manifest);
    // The manifest goes last: its presence marks a complete cache entry.
    backend
        .put(&format!("{dir}/{CONFIG_FILE}"), config.clone())
        .await
        .map_err(|e| e.to_string())?;
    backend
        .put(&format!("{dir}/{MANIFEST_FILE}"), manifest.clone())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(
        cache = dir,
        layer_bytes = layer.size,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "self image packaged"
    );
    Ok(Built {
        config,
        manifest,
        layer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::FsBackend;

    fn sbom() -> Attachment {
        Attachment {
            artifact_type: media_type::CYCLONEDX_JSON.to_owned(),
            title: "sbom.cdx.json".to_owned(),
            document: Bytes::from_static(br#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#),
        }
    }

    async fn read_blob(src: &SelfImageSource, name: &RepoName, digest: &Digest) -> Vec<u8> {
        let blob = src.blob(name, digest, None).await.unwrap();
        let mut bytes = Vec::new();
        let mut stream = super::super::body_stream(blob.body.unwrap());
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(&Digest::sha256_of(&bytes), digest);
        bytes
    }

    async fn digest_of(dir: &std::path::Path, exe: &std::path::Path) -> (Digest, ImageSetDigests) {
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(dir));
        let src = SelfImageSource::start_from("berth".parse().unwrap(), backend, Ok(exe.to_owned()), vec![sbom()]);
        let d = src.ready().await.unwrap();
        assert_eq!(
            manifest_digest(exe).unwrap(),
            d,
            "berth self-digest computes what is served"
        );
        let name: RepoName = "berth".parse().unwrap();
        let m = src.manifest(&name, &Reference::Digest(d.clone())).await.unwrap();
        let parsed = berth_spec::Manifest::parse(&m.bytes, Some(&m.media_type)).unwrap();
        let layer = &parsed.layers[0];
        let blob = src.blob(&name, &layer.digest, None).await.unwrap();
        assert_eq!(blob.size, layer.size);

        // The SBOM hangs on the image: one referrer, whose manifest and blobs are served.
        let referrers = src.referrers(&name, &d).await.unwrap();
        assert_eq!(referrers.len(), 1);
        let r = &referrers[0];
        assert_eq!(r.artifact_type.as_deref(), Some(media_type::CYCLONEDX_JSON));
        assert_eq!(r.media_type, media_type::OCI_MANIFEST);
        let artifact = src.manifest(&name, &Reference::Digest(r.digest.clone())).await.unwrap();
        assert_eq!(artifact.bytes.len() as u64, r.size);
        let artifact = berth_spec::Manifest::parse(&artifact.bytes, Some(&artifact.media_type)).unwrap();
        assert_eq!(artifact.subject.unwrap().digest, d);
        assert_eq!(
            read_blob(&src, &name, &artifact.layers[0].digest).await,
            sbom().document
        );
        assert_eq!(read_blob(&src, &name, &artifact.config.unwrap().digest).await, b"{}");
        // Nothing else refers to anything; another repository has no referrers.
        assert!(src.referrers(&name, &r.digest).await.unwrap().is_empty());
        assert!(src.referrers(&"other".parse().unwrap(), &d).await.unwrap().is_empty());
        (
            d,
            ImageSetDigests {
                tags: src.tags(&name).await.unwrap(),
                layer: layer.digest.clone(),
                sbom: r.digest.clone(),
            },
        )
    }

    #[derive(Debug, PartialEq)]
    struct ImageSetDigests {
        tags: Vec<String>,
        layer: Digest,
        sbom: Digest,
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn same_executable_same_image_fresh_or_cached() {
        let exe = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(exe.path(), b"\x7fELF not really, but bytes to package".repeat(1000)).unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = digest_of(a.path(), exe.path()).await;
        // Cached in a's data directory now; b builds from scratch.
        let cached = digest_of(a.path(), exe.path()).await;
        let fresh = digest_of(b.path(), exe.path()).await;
        assert_eq!(first, cached);
        assert_eq!(first, fresh);
        assert_eq!(first.1.tags, vec!["latest".to_owned(), VERSION.to_owned()]);

        // A damaged cache is rebuilt, giving the same image again.
        let exe_digest = Digest::sha256_of(&std::fs::read(exe.path()).unwrap());
        let layer_path = a.path().join(layout::self_image_dir(&exe_digest)).join(LAYER_FILE);
        let mut bytes = std::fs::read(&layer_path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&layer_path, bytes).unwrap();
        assert_eq!(digest_of(a.path(), exe.path()).await, first);

        // A different executable gives a different image.
        std::fs::write(exe.path(), b"another executable").unwrap();
        assert_ne!(digest_of(b.path(), exe.path()).await.0, first.0);
    }

    #[tokio::test]
    async fn missing_executable_is_reported_not_hung() {
        let a = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(FsBackend::new(a.path()));
        let src = SelfImageSource::start_from(
            "berth".parse().unwrap(),
            backend,
            Ok(a.path().join("no-such-executable")),
            vec![sbom()],
        );
        assert!(src.ready().await.is_err());
        let name: RepoName = "berth".parse().unwrap();
        let err = src
            .manifest(&name, &Reference::Tag("latest".parse().unwrap()))
            .await
            .unwrap_err();
        assert!(matches!(err, RegistryError::Unsupported(_)));
        let err = src.referrers(&name, &Digest::sha256_of(b"x")).await.unwrap_err();
        assert!(matches!(err, RegistryError::Unsupported(_)));
    }
}
