//! Retention, immutable tags and quotas through the real clients and berth's
//! HTTP API, configured in a config file's sections (examples/rules.toml).

mod support;

use support::admin::{gc_dry_run, gc_pass, http};
use support::images::{unique, Image, OciLayout};
use support::tools::skopeo;
use support::{write_config, TestServer};

fn layout_with(dir: &std::path::Path, images: &[(&str, &Image)]) -> OciLayout {
    let mut layout = OciLayout::create(dir);
    for (tag, image) in images {
        layout.add_image(tag, image);
    }
    layout
}

fn copy(src: &str, dst: &str) -> support::tools::Output {
    skopeo(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", src, dst]).run()
}

fn server_with(rules: &str) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), rules);
    let server = TestServer::start_with(&["--no-self-image", "--config", config.to_str().unwrap()]);
    (dir, server)
}

fn image_size(image: &Image) -> u64 {
    (image.manifest.size() + image.blobs().iter().map(|b| b.size()).sum::<usize>()) as u64
}

#[test]
fn skopeo_cannot_move_an_immutable_tag_and_deleting_it_needs_the_override() {
    let (_cfg, server) = server_with("[[immutable]]\nrepositories = \"prod/**\"\ntags = '^v\\d'\n");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Image::runnable(&unique("imm-a")), Image::runnable(&unique("imm-b")));
    let layout = layout_with(tmp.path(), &[("a", &a), ("b", &b)]);
    let dst = format!("docker://{}/prod/app:v1", server.host());
    assert!(copy(&layout.reference("a"), &dst).success());
    // The same digest again: fine.
    let again = copy(&layout.reference("a"), &dst);
    assert!(again.success(), "{}", again.describe());
    // Another digest: refused, and the client says why.
    let moved = copy(&layout.reference("b"), &dst);
    assert!(!moved.success(), "{}", moved.describe());
    assert!(
        moved.stderr.contains("denied") && moved.stderr.contains("immutable"),
        "{}",
        moved.describe()
    );
    // Tags the rule does not cover move freely.
    let latest = format!("docker://{}/prod/app:latest", server.host());
    assert!(copy(&layout.reference("a"), &latest).success());
    assert!(copy(&layout.reference("b"), &latest).success());

    let v1 = format!("{}/v2/prod/app/manifests/v1", server.url);
    let (status, body) = http("DELETE", &v1);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("override"),
        "{body}"
    );
    // By digest, the immutable tag would go with the manifest: refused too.
    let (status, _) = http(
        "DELETE",
        &format!("{}/v2/prod/app/manifests/{}", server.url, a.manifest.digest),
    );
    assert_eq!(status, 403);
    let (status, body) = http("DELETE", &format!("{v1}?berth-override-immutable=true"));
    assert_eq!(status, 202, "{body}");
    let (status, _) = http("GET", &v1);
    assert_eq!(status, 404);
}

#[test]
fn a_push_over_the_quota_is_refused_and_usage_counts_shared_blobs_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (Image::runnable(&unique("quota-a")), Image::runnable(&unique("quota-b")));
    // Room for a (twice: the second repository shares its blobs), not for b.
    let limit = image_size(&a) + image_size(&b) / 2;
    let (_cfg, server) = server_with(&format!("[[quota]]\nrepositories = \"team/**\"\nlimit = {limit}\n"));
    let layout = layout_with(tmp.path(), &[("a", &a), ("b", &b)]);
    for repo in ["team/one", "team/two"] {
        let out = copy(&layout.reference("a"), &format!("docker://{}/{repo}:a", server.host()));
        assert!(out.success(), "{}", out.describe());
    }
    let (status, usage) = http("GET", &format!("{}/berth/v1/usage", server.url));
    assert_eq!(status, 200);
    assert_eq!(usage["quotas"][0]["repositories"], "team/**");
    assert_eq!(usage["quotas"][0]["limit"], limit);
    assert_eq!(usage["quotas"][0]["used"], image_size(&a), "counted once: {usage}");
    assert_eq!(usage["repositories"].as_array().unwrap().len(), 2, "{usage}");

    let over = copy(
        &layout.reference("b"),
        &format!("docker://{}/team/one:b", server.host()),
    );
    assert!(!over.success(), "{}", over.describe());
    assert!(
        over.stderr.contains("denied") && over.stderr.contains("quota exceeded") && over.stderr.contains("team/**"),
        "{}",
        over.describe()
    );
    // Outside the quota's repositories: no limit.
    let out = copy(&layout.reference("b"), &format!("docker://{}/other:b", server.host()));
    assert!(out.success(), "{}", out.describe());
    let (_, after) = http("GET", &format!("{}/berth/v1/usage", server.url));
    assert_eq!(
        after["quotas"][0]["used"],
        image_size(&a),
        "the refusal counted nothing: {after}"
    );

    // A monolithic upload announcing its size is refused before its bytes.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        let big = vec![0u8; limit as usize];
        let digest = support::images::sha256_digest(&big);
        let r = reqwest::Client::new()
            .post(format!("{}/v2/team/one/blobs/uploads/?digest={digest}", server.url))
            .body(big)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DENIED") && body.contains("quota exceeded"), "{body}");
}

#[test]
fn retention_runs_in_the_pass_and_the_dry_run_lists_the_tags() {
    let (_cfg, server) =
        server_with("[[retention]]\nrepositories = \"ci/**\"\nkeep-last = 1\nkeep-tags = '^release'\n");
    let tmp = tempfile::tempdir().unwrap();
    let images: Vec<Image> = (0..3).map(|i| Image::runnable(&unique(&format!("ret-{i}")))).collect();
    let layout = layout_with(
        tmp.path(),
        &[("old", &images[0]), ("release-1", &images[1]), ("new", &images[2])],
    );
    for tag in ["old", "release-1", "new"] {
        assert!(copy(
            &layout.reference(tag),
            &format!("docker://{}/ci/app:{tag}", server.host())
        )
        .success());
        // Push times one apart at least (the tag link's modification time).
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Shares its digest with `old`: must stay, and keep the manifest alive.
    assert!(copy(
        &layout.reference("old"),
        &format!("docker://{}/keep/app:old", server.host())
    )
    .success());

    let dry = gc_dry_run(&server.url);
    assert_eq!(dry["tags_deleted"], serde_json::json!(["ci/app:old"]), "{dry}");
    let report = gc_pass(&server.url);
    assert_eq!(report["tags_deleted"], serde_json::json!(["ci/app:old"]), "{report}");
    let (_, tags) = http("GET", &format!("{}/v2/ci/app/tags/list", server.url));
    assert_eq!(tags["tags"], serde_json::json!(["new", "release-1"]), "{tags}");
    let out = skopeo(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/keep/app:old", server.host()))
        .run();
    assert!(out.success(), "{}", out.describe());
}

/// Starts an upload session; returns its absolute URL.
async fn start_upload(client: &reqwest::Client, base: &str, repo: &str) -> String {
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    match location.starts_with('/') {
        true => format!("{base}{location}"),
        false => location,
    }
}

/// A chunk whose size nobody announced (chunked transfer, as docker streams
/// a layer) is cut off and refused once the upload outgrows the quota, and
/// the quota's usage is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_chunk_over_the_quota_is_refused_while_it_streams() {
    let (_cfg, server) = server_with("[[quota]]\nrepositories = \"team/**\"\nlimit = 100000\n");
    let client = reqwest::Client::new();
    let url = start_upload(&client, &server.url, "team/app").await;
    // 300 KB in 10 KB chunks, with no Content-Length.
    let chunks = (0..30).map(|i| Ok::<_, std::io::Error>(vec![i as u8; 10_000]));
    let r = client
        .patch(&url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("DENIED") && body.contains("quota exceeded") && body.contains("team/**"),
        "{body}"
    );
    // Within the room, a streamed chunk goes through.
    let url = start_upload(&client, &server.url, "team/small").await;
    let chunks = (0..5).map(|i| Ok::<_, std::io::Error>(vec![i as u8; 10_000]));
    let r = client
        .patch(&url)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
}
