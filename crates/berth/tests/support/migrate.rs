//! `berth migrate` in the tests: the images pushed to a source with skopeo,
//! the command itself, its summary line, and the check that a registry
//! serving the destination gives every image back with the same digests.

use super::images::{layout_blob, layout_ref, unique, Entry, Image, Index, Layer, OciLayout, Platform};
use super::s3::S3Engine;
use super::tools::{skopeo_copy, Output};
use super::{berth_cli, TestServer};
use std::path::Path;

/// What was pushed to the source: a multi-layer image under two tags and a
/// multi-arch index, in two repositories.
pub struct Fixture {
    pub image: Image,
    pub index: Index,
    _layouts: tempfile::TempDir,
}

/// (repository, tag) of every tag the fixture pushes.
pub const TAGS: [(&str, &str); 3] = [("mig/app", "v1"), ("mig/app", "stable"), ("mig/multi", "latest")];

impl Fixture {
    /// A three-layer image (one of them 3 MB of noise, one empty of files)
    /// and a two-platform index, fresh content each call.
    pub fn new() -> Fixture {
        let id = unique("migrate");
        let big = super::docker::noise(&id, 3 << 20);
        let layers = vec![
            Layer::busybox(&[Entry::file("marker", format!("{id}\n"))]),
            Layer::new(&[Entry::file("noise.bin", big)]),
            Layer::new(&[Entry::Dir("etc/empty".into())]),
        ];
        let image = Image::new(Platform::amd64(), layers, &["/bin/busybox", "echo", &id]);
        let index = Index::multi_arch(&id);
        Fixture {
            image,
            index,
            _layouts: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Pushes everything to `server` with skopeo.
    pub fn push(&self, server: &TestServer) {
        let mut layout = OciLayout::create(&self._layouts.path().join("src"));
        layout.add_image("app", &self.image);
        layout.add_index("multi", &self.index);
        let host = server.host();
        for (repo, tag) in TAGS {
            let src = if repo == "mig/multi" { "multi" } else { "app" };
            skopeo_copy(&layout.reference(src), &format!("docker://{host}/{repo}:{tag}"), true);
        }
    }

    /// Every manifest digest a tag should serve.
    pub fn digest_of(&self, repo: &str) -> &str {
        match repo {
            "mig/multi" => &self.index.index.digest,
            _ => &self.image.manifest.digest,
        }
    }

    /// Pulls every tag from `server` with skopeo into an OCI layout and
    /// checks that every manifest and blob has the digest pushed.
    pub fn check_served(&self, server: &TestServer) {
        let out = tempfile::tempdir().expect("tempdir");
        let host = server.host();
        for (repo, tag) in TAGS {
            let dir = out.path().join(format!("{}-{tag}", repo.replace('/', "-")));
            skopeo_copy(
                &format!("docker://{host}/{repo}:{tag}"),
                &format!("oci:{}:back", dir.display()),
                true,
            );
            let served = layout_ref(&dir, "back");
            assert_eq!(
                served["digest"],
                self.digest_of(repo),
                "{repo}:{tag} after the migration"
            );
            let images: Vec<&Image> = match repo {
                "mig/multi" => {
                    assert_eq!(layout_blob(&dir, &self.index.index.digest), self.index.index.bytes);
                    self.index.images.iter().collect()
                }
                _ => vec![&self.image],
            };
            for image in images {
                assert_eq!(layout_blob(&dir, &image.manifest.digest), image.manifest.bytes);
                for b in image.blobs() {
                    assert_eq!(layout_blob(&dir, &b.digest), b.bytes, "{repo}:{tag} blob {}", b.digest);
                }
            }
        }
    }

    /// How many distinct blobs (layers, configs and manifests) the fixture stores.
    pub fn blob_count(&self) -> usize {
        let mut all: Vec<&str> = vec![&self.image.manifest.digest, &self.index.index.digest];
        for image in std::iter::once(&self.image).chain(&self.index.images) {
            all.push(&image.manifest.digest);
            all.extend(image.blobs().into_iter().map(|b| b.digest.as_str()));
        }
        all.sort();
        all.dedup();
        all.len()
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

/// `berth migrate --from FROM --to TO`, with `engine`'s endpoint and
/// credentials when a side is on S3. Run to completion, success or not.
pub fn migrate(from: &str, to: &str, engine: Option<&S3Engine>) -> Output {
    migrate_command(from, to, engine).run()
}

pub fn migrate_command(from: &str, to: &str, engine: Option<&S3Engine>) -> super::tools::Tool {
    let mut tool = berth_cli(["migrate", "--from", from, "--to", to]);
    if let Some(e) = engine {
        tool = tool.args(["--s3-endpoint", &e.endpoint]);
        for (k, v) in e.env() {
            tool = tool.env(k, v);
        }
    }
    tool
}

/// The counts of the summary line `berth migrate` prints.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub repositories: u64,
    /// (copied, skipped) of each kind.
    pub tags: (u64, u64),
    pub manifests: (u64, u64),
    pub blobs: (u64, u64),
    pub links: (u64, u64),
    pub bytes: u64,
}

/// Parses `migrated N repositories: tags C copied S skipped, ..., B bytes copied (...)`.
pub fn summary(out: &Output) -> Summary {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("migrated "))
        .unwrap_or_else(|| panic!("no summary line: {}", out.describe()));
    let words: Vec<&str> = line.split([' ', ':', ',']).filter(|w| !w.is_empty()).collect();
    let num = |i: usize| -> u64 { words[i].parse().unwrap_or_else(|_| panic!("{line:?}: word {i}")) };
    let pair = |kind: &str| -> (u64, u64) {
        let i = words
            .iter()
            .position(|w| *w == kind)
            .unwrap_or_else(|| panic!("{line:?}: no {kind}"));
        (num(i + 1), num(i + 3))
    };
    let bytes_at = words.iter().position(|w| *w == "bytes").expect("bytes") - 1;
    Summary {
        repositories: num(1),
        tags: pair("tags"),
        manifests: pair("manifests"),
        blobs: pair("blobs"),
        links: pair("links"),
        bytes: num(bytes_at),
    }
}

/// The files named `data` below `dir/docker/registry/v2/blobs` (stored blobs).
pub fn stored_blobs(data_dir: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "data") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("docker/registry/v2/blobs"), &mut out);
    out
}

/// Where a blob's bytes live in a data directory (distribution's layout).
pub fn blob_path(data_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256");
    data_dir.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
}
