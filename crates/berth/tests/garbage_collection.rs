//! Garbage collection through berth's interfaces: the dry-run report and a
//! pass over HTTP, a multi-architecture image that skopeo copies back whole
//! after a pass (children untagged, as buildx pushes them), and `berth gc`
//! on a directory no server holds (and refused on one a server holds).

mod support;

use serde_json::Value;
use support::admin::http;
use support::images::{layout_blob, layout_ref, unique, Image, Index, OciLayout};
use support::tools::{berth, http_get, skopeo, skopeo_copy};
use support::{berth_exe, BerthProcess};

#[test]
fn a_pass_frees_what_deleted_images_left_and_keeps_every_platform_of_an_index() {
    // No grace period, and untagged manifests go at once: the harshest
    // settings, under which the index's untagged children must still stay.
    let server = berth(&["--gc-grace", "0", "--delete-untagged-after", "0"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(&tmp.path().join("src"));
    let index = Index::multi_arch(&unique("gc-index"));
    let doomed = Image::runnable(&unique("gc-doomed"));
    src.add_index("multi", &index);
    src.add_image("doomed", &doomed);
    let host = server.host();
    skopeo_copy(&src.reference("multi"), &format!("docker://{host}/gc/multi:v1"), true);
    skopeo_copy(
        &src.reference("doomed"),
        &format!("docker://{host}/gc/doomed:v1"),
        false,
    );
    skopeo(["delete", "--tls-verify=false"])
        .arg(format!("docker://{host}/gc/doomed:v1"))
        .ok();

    // Dry run: the doomed image's manifest, config and layers; nothing deleted.
    let (status, dry) = http("GET", &format!("{}/berth/v1/gc", server.url));
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dry_run"], true);
    let doomed_blobs = doomed.blobs().len() as u64 + 1;
    assert_eq!(dry["blobs_deleted"], doomed_blobs, "{dry}");
    let layer = &doomed.blobs()[1].digest;
    let (status, _) = http_get(&format!("{}/v2/gc/doomed/blobs/{layer}", server.url));
    assert_eq!(status, 200, "a dry run deletes nothing");

    let (status, report) = http("POST", &format!("{}/berth/v1/gc", server.url));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["blobs_deleted"], doomed_blobs, "{report}");
    assert_eq!(report["bytes_freed"], dry["bytes_freed"]);
    let (status, _) = http_get(&format!("{}/v2/gc/doomed/blobs/{layer}", server.url));
    assert_eq!(status, 404);

    // Every platform of the index comes back whole, byte for byte.
    let out = tmp.path().join("out");
    skopeo_copy(
        &format!("docker://{host}/gc/multi:v1"),
        &format!("oci:{}:back", out.display()),
        true,
    );
    assert_eq!(layout_ref(&out, "back")["digest"], index.index.digest);
    for img in &index.images {
        assert_eq!(layout_blob(&out, &img.manifest.digest), img.manifest.bytes);
        for b in img.blobs() {
            assert_eq!(layout_blob(&out, &b.digest), b.bytes, "blob {}", b.digest);
        }
    }
    // A second pass has nothing left to do.
    let (_, again) = http("POST", &format!("{}/berth/v1/gc", server.url));
    assert_eq!(again["blobs_deleted"], 0, "{again}");
    assert_eq!(again["manifests_deleted"], 0, "{again}");
}

#[test]
fn berth_gc_runs_offline_and_defers_to_a_running_server() {
    let data = tempfile::tempdir().unwrap();
    let server = BerthProcess::spawn(data.path(), &["--no-self-image"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut src = OciLayout::create(&tmp.path().join("src"));
    let img = Image::runnable(&unique("gc-cli"));
    src.add_image("one", &img);
    skopeo_copy(
        &src.reference("one"),
        &format!("docker://{}/gc/cli:v1", server.addr),
        false,
    );
    skopeo(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}/gc/cli:v1", server.addr))
        .ok();

    let gc = |extra: &[&str]| {
        std::process::Command::new(berth_exe())
            .args(["gc", "--data"])
            .arg(data.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let out = gc(&["--grace", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pid {}", server.child.id())) && stderr.contains("POST"),
        "{stderr}"
    );
    drop(server);

    let out = gc(&["--grace", "0", "--dry-run", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dry["blobs_deleted"], img.blobs().len() as u64 + 1, "{dry}");
    // The default grace period (a day) keeps everything just pushed.
    let out = gc(&[]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("freed 0 B in 0 blobs"),
        "{out:?}"
    );
    let out = gc(&["--grace", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("freed ") && !text.starts_with("freed 0 B"), "{text}");
    let blobs = data.path().join("docker/registry/v2/blobs/sha256");
    let left: usize = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|p| std::fs::read_dir(p.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(left, 0, "every blob of the deleted image is gone");
}
