//! berth and CNCF distribution (`docker-registry`, registry:2) serve each
//! other's data directories: images pushed to one are pulled from the other
//! with the same digests and tags. Fails (never skips) when docker-registry
//! or skopeo is missing.

mod support;

use support::admin::gc_pass;
use support::compat::Fixture;
use support::distribution::Distribution;
use support::images::{unique, Image, OciLayout};
use support::tools::{berth, skopeo, skopeo_copy};

#[test]
fn berth_serves_a_distribution_directory() {
    let data = tempfile::tempdir().unwrap();
    let fixture = Fixture::new("h2-compat-from-distribution");
    let dist = Distribution::start(data.path());
    fixture.push(&dist.host);
    // The fixture reads back from distribution itself too: a failure there is
    // the fixture's, not berth's.
    fixture.check(&dist.host, &format!("http://{}", dist.host), false);
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
    fixture.check(&server.host(), &server.url, false);
    let report = gc_pass(&server.url);
    assert_eq!(report["manifests_deleted"], 0, "{report}");
    fixture.check(&server.host(), &server.url, false);
    server.stop();
    let dist = Distribution::start(data.path());
    fixture.check(&dist.host, &format!("http://{}", dist.host), false);
}

#[test]
fn distribution_serves_a_berth_directory() {
    let data = tempfile::tempdir().unwrap();
    let fixture = Fixture::new("h2-compat-from-berth");
    let server = berth(&["--data", &data.path().display().to_string(), "--gc-grace", "0"]);
    fixture.push(&server.host());
    fixture.check(&server.host(), &server.url, false);
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
    fixture.check(&server.host(), &server.url, false);
    server.stop();

    let dist = Distribution::start(data.path());
    fixture.check(&dist.host, &format!("http://{}", dist.host), false);
}
