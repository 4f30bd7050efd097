//! The docker engine as a test client: push, pull, run, with every image it
//! makes removed again. Scenarios shared by the test files that run docker
//! against berth (on the filesystem, on S3) live here too.
//!
//! The engine is shared (with other tests and across runs), so every image
//! has a unique marker in a layer of its own: a pull can never be satisfied by
//! layers the engine already had, and every image made here is removed.

use super::images::{sha256_digest, unique, Entry, Image, Layer, OciLayout, Platform};
use super::tools::{http_get, skopeo_copy, tool, Output, Tool};
use super::TestServer;
use serde_json::Value;

pub fn docker<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Tool {
    tool("docker").args(args)
}

/// `docker push` / `docker pull` that must succeed at the first try: the
/// engine retries failed requests by itself, which would hide a registry bug.
pub fn transfer(verb: &str, reference: &str) -> Output {
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
pub struct Cleanup(Vec<String>);

impl Cleanup {
    pub fn add(&mut self, reference: &str) {
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
pub fn load(image: &Image, local: &str, cleanup: &mut Cleanup) {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(tmp.path());
    layout.add_image("load", image);
    cleanup.add(local);
    skopeo_copy(&layout.reference("load"), &format!("docker-daemon:{local}"), false);
}

/// The digest in `docker push`'s last line (`<tag>: digest: sha256:... size: N`).
pub fn pushed_digest(out: &Output) -> String {
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the push output: {}", out.describe()))
        .to_string()
}

/// Removes `reference` from the engine and checks it is gone.
pub fn remove(reference: &str) {
    docker(["rmi", reference]).ok();
    docker(["image", "inspect", reference]).fails();
}

pub fn inspect(reference: &str) -> Value {
    let out = docker(["image", "inspect", reference]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
    v[0].clone()
}

pub fn run(reference: &str) -> String {
    docker(["run", "--rm", "--network=host", reference]).ok().stdout
}

/// The manifest berth serves for `name:reference`, checked to be `digest`'s.
pub fn served_manifest(server: &TestServer, name: &str, reference: &str, digest: &str) -> Value {
    let (status, body) = http_get(&format!("{}/v2/{name}/manifests/{reference}", server.url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        sha256_digest(&body),
        digest,
        "berth serves other bytes than docker pushed"
    );
    serde_json::from_slice(&body).expect("manifest JSON")
}

/// Push, pull and run of a one-layer image: every byte goes through the registry.
pub fn push_pull_run(server: &TestServer) {
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
    let manifest = served_manifest(server, "h2/docker/run", "v1", &digest);
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

/// Tiny deterministic generator: incompressible bytes without a rand crate.
pub fn noise(seed: &str, len: usize) -> Vec<u8> {
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
pub fn push_pull_several_layers(server: &TestServer) {
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
    let manifest = served_manifest(server, "h2/docker/layers", "v1", &digest);
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(4), "{manifest}");

    remove(&local);
    remove(&remote);
    let pull = transfer("pull", &remote);
    assert_eq!(pull.stdout.matches("Pull complete").count(), 4, "{}", pull.describe());
    let out = run(&remote);
    let big_hex = sha256_digest(&big).trim_start_matches("sha256:").to_string();
    assert_eq!(out, format!("{marker}\nlayer two\n4\n{big_hex}  /big\n"));
}
