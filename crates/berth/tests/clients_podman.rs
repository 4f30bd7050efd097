//! podman against berth: pulls of an image and of a multi-platform index get
//! the digests that were pushed. Fails (never skips) when podman or skopeo is
//! missing.
//!
//! podman runs as root with its own storage in a temporary directory (vfs
//! driver, cgroupfs, file events): it needs no kernel overlay support, no
//! systemd and no configuration of the machine, and leaves nothing behind.

mod support;

use serde_json::Value;
use std::path::Path;
use support::images::{unique, Image, Index, OciLayout};
use support::tools::{berth, skopeo_copy, tool, Tool};

fn podman<I: IntoIterator<Item = S>, S: AsRef<str>>(state: &Path, args: I) -> Tool {
    let d = |sub: &str| state.join(sub).display().to_string();
    tool("podman")
        .args(["--root", &d("root"), "--runroot", &d("run"), "--tmpdir", &d("tmp")])
        .args([
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ])
        .args(args)
}

fn inspect(state: &Path, reference: &str) -> Value {
    let out = podman(state, ["image", "inspect", reference]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    v[0].clone()
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}

#[test]
fn pull_image() {
    let server = berth(&[]);
    let state = tempfile::tempdir().unwrap();
    let image = Image::runnable(&unique("h2-podman"));
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(src.path());
    layout.add_image("one", &image);
    let remote = format!("{}/h2/podman/one:v1", server.host());
    skopeo_copy(&layout.reference("one"), &format!("docker://{remote}"), false);

    podman(state.path(), ["pull", "--tls-verify=false", remote.as_str()]).ok();
    let v = inspect(state.path(), &remote);
    assert_eq!(v["Digest"], image.manifest.digest, "{v}");
    assert_eq!(v["Id"], hex(&image.config.digest), "podman stored another config: {v}");
    assert_eq!(v["Architecture"], "amd64", "{v}");
    assert!(
        v["RepoDigests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str() == Some(&format!("{}/h2/podman/one@{}", server.host(), image.manifest.digest))),
        "{v}"
    );
}

#[test]
fn pull_multi_arch_index() {
    let server = berth(&[]);
    let state = tempfile::tempdir().unwrap();
    let index = Index::multi_arch(&unique("h2-podman-multi"));
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(src.path());
    layout.add_index("multi", &index);
    let remote = format!("{}/h2/podman/multi:v1", server.host());
    skopeo_copy(&layout.reference("multi"), &format!("docker://{remote}"), true);

    podman(state.path(), ["pull", "--tls-verify=false", remote.as_str()]).ok();
    let v = inspect(state.path(), &remote);
    let amd64 = index.image("amd64");
    assert_eq!(
        v["Id"],
        hex(&amd64.config.digest),
        "podman pulled another image than linux/amd64: {v}"
    );
    assert_eq!(v["Architecture"], "amd64", "{v}");
    let repo_digests: Vec<&str> = v["RepoDigests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for digest in [&index.index.digest, &amd64.manifest.digest] {
        let want = format!("{}/h2/podman/multi@{digest}", server.host());
        assert!(repo_digests.contains(&want.as_str()), "{want} not in {repo_digests:?}");
    }
}
