//! berth and CNCF distribution 2.8.2 (Debian's `docker-registry`, its `s3`
//! storage driver) share one bucket on a real Ceph RGW, both ways: what one
//! wrote on a prefix the other serves with the same digests, tags and catalog,
//! including a blob uploaded in chunks and an image deleted (with its tag).
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*` (scripts/test.sh starts it and sets
//! them). Without them a test says so and passes, except in CI (`CI=true`),
//! where it fails (see `S3Engine::ceph`). A missing docker-registry or
//! skopeo fails the test.

mod support;

use support::compat::Fixture;
use support::distribution::Distribution;
use support::s3::S3Prefix;
use support::TestServer;

#[test]
fn berth_serves_a_bucket_distribution_wrote() {
    let Some(prefix) = S3Prefix::ceph() else { return };
    let fixture = Fixture::new("s3-compat-from-distribution");
    let dist = Distribution::start_on_s3(&prefix.engine, &prefix.storage);
    let dist_url = format!("http://{}", dist.host);
    fixture.push(&dist.host);
    fixture.upload_chunked(&dist_url);
    fixture.push_and_delete_doomed(&dist.host);
    // The fixture reads back from distribution itself first: a failure there
    // is the fixture's (or distribution's on Ceph), not berth's.
    fixture.check(&dist.host, &dist_url, true);

    // berth on the same prefix, while distribution still serves it.
    let server = TestServer::start_on_s3(&prefix.engine, &prefix.storage, &["--no-self-image"]);
    fixture.check(&server.host(), &server.url, true);
    server.stop();
    // And berth's reads changed nothing distribution relies on.
    fixture.check(&dist.host, &dist_url, true);
    dist.stop();
}

#[test]
fn distribution_serves_a_bucket_berth_wrote() {
    let Some(prefix) = S3Prefix::ceph() else { return };
    let fixture = Fixture::new("s3-compat-from-berth");
    let server = TestServer::start_on_s3(&prefix.engine, &prefix.storage, &["--no-self-image"]);
    fixture.push(&server.host());
    fixture.upload_chunked(&server.url);
    fixture.push_and_delete_doomed(&server.host());
    fixture.check(&server.host(), &server.url, true);

    // distribution on the same prefix, while berth still serves it.
    let dist = Distribution::start_on_s3(&prefix.engine, &prefix.storage);
    let dist_url = format!("http://{}", dist.host);
    fixture.check(&dist.host, &dist_url, true);
    dist.stop();
    fixture.check(&server.host(), &server.url, true);
    server.stop();
}
