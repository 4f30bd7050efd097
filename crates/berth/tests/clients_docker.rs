//! The docker engine against berth: push, pull, run, multi-arch pulls,
//! cross-repository mounts and multi-layer images. Fails (never skips) when
//! docker or skopeo is missing or dockerd is not running.
//!
//! The engine is shared (with other tests and across runs), so every image
//! has a unique marker in a layer of its own: a pull can never be satisfied by
//! layers the engine already had, and every image this file makes is removed.

mod support;

use serde_json::Value;
use support::images::{sha256_digest, unique, Entry, Image, Index, Layer, OciLayout, Platform};
use support::tools::{berth, http_get, skopeo_copy, tool, Output, Tool};
use support::TestServer;

fn docker<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Tool {
    tool("docker").args(args)
}

/// `docker push` / `docker pull` that must succeed at the first try: the
/// engine retries failed requests by itself, which would hide a registry bug.
fn transfer(verb: &str, reference: &str) -> Output {
    let out = docker([verb, reference]).ok();
    assert!(
        !out.stdout.contains("Retrying") && !out.stderr.contains("Retrying"),
        "docker {verb} needed retries: {}",
        out.describe()
    );
    out
}

/// Image references this test made in the engine, removed when it ends
/// (however it ends).
#[derive(Default)]
struct Cleanup(Vec<String>);

impl Cleanup {
    fn add(&mut self, reference: &str) {
        self.0.push(reference.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = docker(["rmi", "-f", r.as_str()]).run();
        }
    }
}

/// Puts `image` into the engine as `local` (a name without a registry) by
/// copying its OCI layout with skopeo: no registry is involved, so the engine
/// knows of no copy of its layers anywhere and a push must upload them.
fn load(image: &Image, local: &str, cleanup: &mut Cleanup) {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(tmp.path());
    layout.add_image("load", image);
    cleanup.add(local);
    skopeo_copy(&layout.reference("load"), &format!("docker-daemon:{local}"), false);
}

/// The digest in `docker push`'s last line (`<tag>: digest: sha256:... size: N`).
fn pushed_digest(out: &Output) -> String {
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the push output: {}", out.describe()))
        .to_string()
}

/// Removes `reference` from the engine and checks it is gone.
fn remove(reference: &str) {
    docker(["rmi", reference]).ok();
    docker(["image", "inspect", reference]).fails();
}

fn inspect(reference: &str) -> Value {
    let out = docker(["image", "inspect", reference]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    v[0].clone()
}

fn run(reference: &str) -> String {
    docker(["run", "--rm", "--network=host", reference]).ok().stdout
}

/// The manifest berth serves for `name:reference`, checked to be `digest`'s.
fn served_manifest(server: &TestServer, name: &str, reference: &str, digest: &str) -> Value {
    let (status, body) = http_get(&format!("{}/v2/{name}/manifests/{reference}", server.url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        sha256_digest(&body),
        digest,
        "berth serves other bytes than docker pushed"
    );
    serde_json::from_slice(&body).expect("manifest JSON")
}

#[test]
fn push_pull_run() {
    let server = berth(&[]);
    let mut cleanup = Cleanup::default();
    let marker = unique("h2-docker-run");
    let image = Image::runnable(&marker);
    let local = format!("h2-local/{marker}:src");
    load(&image, &local, &mut cleanup);

    let remote = format!("{}/h2/docker/run:v1", server.host());
    cleanup.add(&remote);
    docker(["tag", local.as_str(), remote.as_str()]).ok();
    let push = transfer("push", &remote);
    assert!(
        push.stdout.contains("Pushed"),
        "nothing was uploaded: {}",
        push.describe()
    );
    let digest = pushed_digest(&push);
    let manifest = served_manifest(&server, "h2/docker/run", "v1", &digest);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(1), "{manifest}");

    remove(&local);
    remove(&remote);
    let pull = transfer("pull", &remote);
    assert!(
        pull.stdout.contains("Pull complete"),
        "no layer was downloaded: {}",
        pull.describe()
    );
    assert!(
        pull.stdout.contains(&format!("Digest: {digest}")),
        "pulled another digest than pushed ({digest}): {}",
        pull.describe()
    );
    assert_eq!(
        inspect(&remote)["Id"],
        image.config.digest,
        "the image id is its config's digest"
    );
    assert_eq!(run(&remote).trim(), marker);
}

/// A pull of a multi-platform index gets the linux/amd64 image.
#[test]
fn pull_multi_arch_index_picks_amd64() {
    let server = berth(&[]);
    let mut cleanup = Cleanup::default();
    let marker = unique("h2-docker-multi");
    let index = Index::multi_arch(&marker);
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(tmp.path());
    layout.add_index("multi", &index);
    let remote = format!("{}/h2/docker/multi:v1", server.host());
    skopeo_copy(&layout.reference("multi"), &format!("docker://{remote}"), true);

    cleanup.add(&remote);
    let pull = transfer("pull", &remote);
    assert!(
        pull.stdout.contains(&format!("Digest: {}", index.index.digest)),
        "docker reports another digest than the index's {}: {}",
        index.index.digest,
        pull.describe()
    );
    let v = inspect(&remote);
    assert_eq!(v["Architecture"], "amd64", "{v}");
    assert_eq!(v["Os"], "linux", "{v}");
    let amd64 = index.image("amd64");
    assert_eq!(amd64.platform, Platform::amd64());
    assert_eq!(
        v["Id"], amd64.config.digest,
        "docker pulled another image than linux/amd64: {v}"
    );
    assert!(
        v["RepoDigests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str() == Some(&format!("{}/h2/docker/multi@{}", server.host(), index.index.digest))),
        "{v}"
    );
    assert_eq!(run(&remote).trim(), format!("{marker}-amd64"));
}

/// Pushing an image to a second repository of the same registry mounts its
/// blobs from the first instead of uploading them again.
#[test]
fn push_to_second_repository_mounts_blobs() {
    let server = berth(&[]);
    let mut cleanup = Cleanup::default();
    let marker = unique("h2-docker-mount");
    let image = Image::runnable(&marker);
    let local = format!("h2-local/{marker}:src");
    load(&image, &local, &mut cleanup);

    let first = format!("{}/h2/docker/mount-a:v1", server.host());
    let second = format!("{}/h2/docker/mount-b:v1", server.host());
    for r in [&first, &second] {
        cleanup.add(r);
        docker(["tag", local.as_str(), r.as_str()]).ok();
    }
    let push_a = transfer("push", &first);
    let push_b = transfer("push", &second);
    assert!(
        push_b.stdout.contains("Mounted from h2/docker/mount-a"),
        "the second push did not mount the layer: {}",
        push_b.describe()
    );
    let digest = pushed_digest(&push_a);
    assert_eq!(pushed_digest(&push_b), digest);

    // The mounted blobs are really in the second repository.
    let manifest = served_manifest(&server, "h2/docker/mount-b", "v1", &digest);
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for b in blobs {
        let (status, body) = http_get(&format!("{}/v2/h2/docker/mount-b/blobs/{b}", server.url));
        assert_eq!(status, 200, "blob {b} not in the second repository");
        assert_eq!(sha256_digest(&body), b);
    }
}

/// Tiny deterministic generator: incompressible bytes without a rand crate.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    use sha2::Digest as _;
    let seed = sha2::Sha256::digest(seed.as_bytes());
    let mut x = u64::from_le_bytes(seed[..8].try_into().unwrap()) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An image of several layers, one of them large and incompressible and one
/// overwriting a file of an earlier one, goes up and comes back whole and in order.
#[test]
fn push_pull_several_layers() {
    let server = berth(&[]);
    let mut cleanup = Cleanup::default();
    let marker = unique("h2-docker-layers");
    let big = noise(&marker, 6 << 20);
    let layers = vec![
        Layer::busybox(&[
            Entry::file("order", "1\n"),
            Entry::file("marker", format!("{marker}\n")),
        ]),
        Layer::new(&[Entry::file("second", "layer two\n")]),
        Layer::new(&[Entry::file("big", big.clone())]),
        Layer::new(&[Entry::file("order", "4\n")]),
    ];
    let image = Image::new(
        Platform::amd64(),
        layers,
        &["/bin/sh", "-c", "cat /marker /second /order; sha256sum /big"],
    );
    let local = format!("h2-local/{marker}:src");
    load(&image, &local, &mut cleanup);

    let remote = format!("{}/h2/docker/layers:v1", server.host());
    cleanup.add(&remote);
    docker(["tag", local.as_str(), remote.as_str()]).ok();
    let push = transfer("push", &remote);
    let digest = pushed_digest(&push);
    let manifest = served_manifest(&server, "h2/docker/layers", "v1", &digest);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(4), "{manifest}");

    remove(&local);
    remove(&remote);
    let pull = transfer("pull", &remote);
    assert_eq!(pull.stdout.matches("Pull complete").count(), 4, "{}", pull.describe());
    let out = run(&remote);
    let big_hex = sha256_digest(&big).trim_start_matches("sha256:").to_string();
    assert_eq!(out, format!("{marker}\nlayer two\n4\n{big_hex}  /big\n"));
}
