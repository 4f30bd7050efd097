//! berth and CNCF distribution (`docker-registry`, registry:2) serve each
//! other's data directories: images pushed to one are pulled from the other
//! with the same digests and tags. Fails (never skips) when docker-registry
//! or skopeo is missing.

mod support;

use serde_json::Value;
use support::admin::gc_pass;
use support::distribution::Distribution;
use support::images::{layout_blob, layout_ref, sha256_digest, unique, Image, Index, OciLayout};
use support::tools::{berth, http_get, skopeo, skopeo_copy, skopeo_raw};

/// What both directions push and then expect to read back.
struct Fixture {
    _tmp: tempfile::TempDir,
    src: OciLayout,
    index: Index,
    a: Image,
    b: Image,
}

impl Fixture {
    fn new(prefix: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let mut src = OciLayout::create(tmp.path());
        let index = Index::multi_arch(&unique(&format!("{prefix}-multi")));
        let a = Image::runnable(&unique(&format!("{prefix}-a")));
        let b = Image::runnable(&unique(&format!("{prefix}-b")));
        src.add_index("multi", &index);
        src.add_image("a", &a);
        src.add_image("b", &b);
        Fixture {
            _tmp: tmp,
            src,
            index,
            a,
            b,
        }
    }

    /// Pushes with skopeo: the index as h2/compat/multi:v1, `a` as
    /// h2/compat/one:v1 and :latest, `b` as h2/compat/one:v2.
    fn push(&self, host: &str) {
        skopeo_copy(
            &self.src.reference("multi"),
            &format!("docker://{host}/h2/compat/multi:v1"),
            true,
        );
        for (from, tag) in [("a", "v1"), ("a", "latest"), ("b", "v2")] {
            skopeo_copy(
                &self.src.reference(from),
                &format!("docker://{host}/h2/compat/one:{tag}"),
                false,
            );
        }
    }

    /// Reads everything back from the registry at `host` (`url` is its base URL).
    fn check(&self, host: &str, url: &str) {
        let multi = format!("{host}/h2/compat/multi:v1");
        assert_eq!(skopeo_raw(&multi), self.index.index.bytes, "index of {multi}");
        for img in &self.index.images {
            let r = format!("{host}/h2/compat/multi@{}", img.manifest.digest);
            assert_eq!(skopeo_raw(&r), img.manifest.bytes, "{r}");
        }
        for (tag, img) in [("v1", &self.a), ("latest", &self.a), ("v2", &self.b)] {
            let r = format!("{host}/h2/compat/one:{tag}");
            assert_eq!(sha256_digest(&skopeo_raw(&r)), img.manifest.digest, "{r}");
        }

        let out = skopeo(["list-tags", "--tls-verify=false"])
            .arg(format!("docker://{host}/h2/compat/one"))
            .ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.describe()));
        let mut tags: Vec<&str> = v["Tags"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        tags.sort_unstable();
        assert_eq!(tags, ["latest", "v1", "v2"], "{v}");

        let (status, body) = http_get(&format!("{url}/v2/_catalog"));
        assert_eq!(status, 200);
        let catalog: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            catalog["repositories"],
            serde_json::json!(["h2/compat/multi", "h2/compat/one"]),
            "{catalog}"
        );

        // Every blob comes out whole: copy it all into a fresh layout.
        let out = tempfile::tempdir().unwrap();
        skopeo_copy(
            &format!("docker://{multi}"),
            &format!("oci:{}:multi", out.path().display()),
            true,
        );
        skopeo_copy(
            &format!("docker://{host}/h2/compat/one:v2"),
            &format!("oci:{}:b", out.path().display()),
            false,
        );
        assert_eq!(layout_ref(out.path(), "multi")["digest"], self.index.index.digest);
        assert_eq!(layout_ref(out.path(), "b")["digest"], self.b.manifest.digest);
        for img in self.index.images.iter().chain([&self.b]) {
            for blob in img.blobs() {
                assert_eq!(layout_blob(out.path(), &blob.digest), blob.bytes);
            }
        }
    }
}

#[test]
fn berth_serves_a_distribution_directory() {
    let data = tempfile::tempdir().unwrap();
    let fixture = Fixture::new("h2-compat-from-distribution");
    let dist = Distribution::start(data.path());
    fixture.push(&dist.host);
    // The fixture reads back from distribution itself too: a failure there is
    // the fixture's, not berth's.
    fixture.check(&dist.host, &format!("http://{}", dist.host));
    dist.stop();

    // berth collects garbage in it with its harshest settings (no grace,
    // untagged manifests at once): nothing distribution's images need goes,
    // and distribution still serves what is left.
    let server = berth(&[
        "--data",
        &data.path().display().to_string(),
        "--gc-grace",
        "0",
        "--delete-untagged-after",
        "0",
    ]);
    fixture.check(&server.host(), &server.url);
    let report = gc_pass(&server.url);
    assert_eq!(report["manifests_deleted"], 0, "{report}");
    fixture.check(&server.host(), &server.url);
    server.stop();
    let dist = Distribution::start(data.path());
    fixture.check(&dist.host, &format!("http://{}", dist.host));
}

#[test]
fn distribution_serves_a_berth_directory() {
    let data = tempfile::tempdir().unwrap();
    let fixture = Fixture::new("h2-compat-from-berth");
    let server = berth(&["--data", &data.path().display().to_string(), "--gc-grace", "0"]);
    fixture.push(&server.host());
    fixture.check(&server.host(), &server.url);
    // A pass that deletes something (an image pushed and deleted) leaves a
    // directory distribution still reads.
    let tmp = tempfile::tempdir().unwrap();
    let mut doomed = OciLayout::create(tmp.path());
    doomed.add_image("doomed", &Image::runnable(&unique("h2-compat-doomed")));
    let host = server.host();
    skopeo_copy(
        &doomed.reference("doomed"),
        &format!("docker://{host}/h2/compat/one:doomed"),
        false,
    );
    skopeo(["delete", "--tls-verify=false"])
        .arg(format!("docker://{host}/h2/compat/one:doomed"))
        .ok();
    let report = gc_pass(&server.url);
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 3, "{report}");
    fixture.check(&server.host(), &server.url);
    server.stop();

    let dist = Distribution::start(data.path());
    fixture.check(&dist.host, &format!("http://{}", dist.host));
}
