//! Test images built from nothing but the static busybox of the machine, so the
//! client tests need no network. Bytes are deterministic for given inputs
//! (tar headers with fixed times and owners, gzip without a timestamp, JSON with
//! sorted keys): the same inputs give the same digests, which the tests compare
//! across clients and registries.
//!
//! [`OciLayout`] writes an OCI image layout directory that `skopeo copy
//! oci:DIR:TAG ...` reads, which is how the images get into registries and into
//! the docker engine.

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Where the static busybox is (Debian's busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A name no earlier run (nor a parallel test) has used, for repositories, tags
/// and markers: the docker engine is shared and keeps layers between runs.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Some bytes and their digest.
#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.size()})
    }
}

/// One entry of a layer's tar; paths are relative to `/`.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir(String),
    File { path: String, data: Vec<u8>, mode: u32 },
    Symlink { path: String, target: String },
}

impl Entry {
    pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Entry {
        Entry::File {
            path: path.into(),
            data: data.into(),
            mode: 0o644,
        }
    }
}

/// A gzip'd tar layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The compressed bytes, as stored in registries.
    pub blob: Blob,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

impl Layer {
    pub fn new(entries: &[Entry]) -> Layer {
        let mut tar = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::Dir(path) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{}/", path.trim_end_matches('/')), std::io::empty())
                        .expect("tar dir");
                }
                Entry::File { path, data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice()).expect("tar file");
                }
                Entry::Symlink { path, target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target).expect("tar symlink");
                }
            }
        }
        let tar = tar.into_inner().expect("tar finishes");
        let diff_id = sha256_digest(&tar);
        // No file name and mtime 0 in the gzip header: the same tar always gives the same blob.
        let mut gz: GzEncoder<Vec<u8>> = GzBuilder::new().mtime(0).write(Vec::new(), Compression::fast());
        gz.write_all(&tar).expect("gzip");
        Layer {
            blob: Blob::new(gz.finish().expect("gzip finishes")),
            diff_id,
        }
    }

    /// The static busybox at /bin/busybox, /bin/sh pointing at it, and `extra`.
    pub fn busybox(extra: &[Entry]) -> Layer {
        let busybox = std::fs::read(BUSYBOX)
            .unwrap_or_else(|e| panic!("reading {BUSYBOX} (install the busybox-static package): {e}"));
        let mut entries = vec![
            Entry::Dir("bin".into()),
            Entry::File {
                path: "bin/busybox".into(),
                data: busybox,
                mode: 0o755,
            },
            Entry::Symlink {
                path: "bin/sh".into(),
                target: "busybox".into(),
            },
        ];
        entries.extend_from_slice(extra);
        Layer::new(&entries)
    }
}

/// linux/<architecture>[/<variant>]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn amd64() -> Platform {
        Platform {
            architecture: "amd64".into(),
            variant: None,
        }
    }

    pub fn arm64() -> Platform {
        Platform {
            architecture: "arm64".into(),
            variant: Some("v8".into()),
        }
    }

    fn json(&self) -> Value {
        let mut p = json!({"architecture": self.architecture, "os": "linux"});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

/// An OCI image: manifest, config and layers.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub platform: Platform,
}

impl Image {
    pub fn new(platform: Platform, layers: Vec<Layer>, cmd: &[&str]) -> Image {
        let mut config = platform.json();
        config["created"] = json!("1970-01-01T00:00:00Z");
        config["config"] = json!({"Cmd": cmd, "Env": ["PATH=/bin"]});
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        });
        let config = Blob::new(serde_json::to_vec(&config).expect("json"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(OCI_CONFIG),
            "layers": layers.iter().map(|l| l.blob.descriptor(OCI_LAYER_GZIP)).collect::<Vec<_>>(),
        });
        Image {
            manifest: Blob::new(serde_json::to_vec(&manifest).expect("json")),
            config,
            layers,
            platform,
        }
    }

    /// A linux/amd64 busybox image whose command prints `marker`; `marker` is
    /// also in the layer (at /marker), so different markers never share a layer.
    pub fn runnable(marker: &str) -> Image {
        let layer = Layer::busybox(&[Entry::file("marker", format!("{marker}\n"))]);
        Image::new(Platform::amd64(), vec![layer], &["/bin/busybox", "echo", marker])
    }

    /// All blobs the image references (config first, then layers).
    pub fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config)
            .chain(self.layers.iter().map(|l| &l.blob))
            .collect()
    }
}

/// An OCI image index of several images.
#[derive(Debug, Clone)]
pub struct Index {
    pub index: Blob,
    pub images: Vec<Image>,
}

impl Index {
    pub fn new(images: Vec<Image>) -> Index {
        let manifests: Vec<Value> = images
            .iter()
            .map(|i| {
                let mut d = i.manifest.descriptor(OCI_MANIFEST);
                d["platform"] = i.platform.json();
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        Index {
            index: Blob::new(serde_json::to_vec(&index).expect("json")),
            images,
        }
    }

    /// linux/amd64 (runnable: prints `<marker>-amd64`) and linux/arm64/v8
    /// (not runnable here; its layer holds the file /arm64-marker).
    pub fn multi_arch(marker: &str) -> Index {
        let amd64_marker = format!("{marker}-amd64");
        let amd64 = Image::runnable(&amd64_marker);
        let arm64_layer = Layer::new(&[Entry::file("arm64-marker", format!("{marker}-arm64\n"))]);
        let arm64 = Image::new(
            Platform::arm64(),
            vec![arm64_layer],
            &["/bin/sh", "-c", "cat /arm64-marker"],
        );
        Index::new(vec![amd64, arm64])
    }

    pub fn image(&self, architecture: &str) -> &Image {
        self.images
            .iter()
            .find(|i| i.platform.architecture == architecture)
            .unwrap_or_else(|| panic!("no {architecture} image in the index"))
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
pub struct OciLayout {
    pub dir: PathBuf,
    refs: Vec<Value>,
}

impl OciLayout {
    /// Creates the layout in `dir` (which may exist and be empty).
    pub fn create(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("creating the layout");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
        let layout = OciLayout {
            dir: dir.to_path_buf(),
            refs: Vec::new(),
        };
        layout.write_index_json();
        layout
    }

    fn write_blob(&self, blob: &Blob) {
        let hex = blob.digest.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), &blob.bytes).expect("writing a blob");
    }

    fn write_index_json(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.refs});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index.json");
    }

    fn add_ref(&mut self, tag: &str, blob: &Blob, media_type: &str) {
        let mut d = blob.descriptor(media_type);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.refs.push(d);
        self.write_index_json();
    }

    fn write_image_blobs(&self, image: &Image) {
        for b in image.blobs() {
            self.write_blob(b);
        }
        self.write_blob(&image.manifest);
    }

    /// Adds `image` as `oci:DIR:tag`.
    pub fn add_image(&mut self, tag: &str, image: &Image) {
        self.write_image_blobs(image);
        self.add_ref(tag, &image.manifest, OCI_MANIFEST);
    }

    /// Adds `index` and all its images as `oci:DIR:tag`.
    pub fn add_index(&mut self, tag: &str, index: &Index) {
        for i in &index.images {
            self.write_image_blobs(i);
        }
        self.write_blob(&index.index);
        self.add_ref(tag, &index.index, OCI_INDEX);
    }

    /// `oci:<dir>:<tag>`, the skopeo reference of a tag of this layout.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}

/// Reads an OCI layout's `index.json` and returns the descriptor tagged `tag`.
pub fn layout_ref(dir: &Path, tag: &str) -> Value {
    let index: Value = serde_json::from_slice(
        &std::fs::read(dir.join("index.json")).unwrap_or_else(|e| panic!("{}/index.json: {e}", dir.display())),
    )
    .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .expect("manifests array")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no ref {tag:?} in {}/index.json: {index}", dir.display()))
        .clone()
}

/// The bytes of blob `digest` of an OCI layout, checked against the digest.
pub fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(sha256_digest(&bytes), digest, "{} holds other bytes", path.display());
    bytes
}
