//! The docker engine against berth: push, pull, run, multi-arch pulls,
//! cross-repository mounts and multi-layer images. Fails (never skips) when
//! docker or skopeo is missing or dockerd is not running.
//! The helpers and the scenarios other files share are in support/docker.rs.

mod support;

use support::docker::{self, inspect, load, pushed_digest, run, served_manifest, transfer, Cleanup};
use support::images::{sha256_digest, unique, Image, Index, OciLayout, Platform};
use support::tools::{berth, http_get, skopeo_copy};

#[test]
fn push_pull_run() {
    docker::push_pull_run(&berth(&[]));
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
        docker::docker(["tag", local.as_str(), r.as_str()]).ok();
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

#[test]
fn push_pull_several_layers() {
    docker::push_pull_several_layers(&berth(&[]));
}
