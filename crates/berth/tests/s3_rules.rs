//! Repository rules with several replicas on one bucket (Ceph RGW): a quota
//! counts what every replica pushed, an immutable tag has one first push
//! whichever replica takes it, and retention run by `berth gc --storage`
//! beside the serving replicas removes only the tags it judged. The
//! interleavings themselves are pinned in berth-registry's
//! `gc::shared::tests`; here the same protocol runs on a real store.
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*`; without them the tests say so
//! and pass, except in CI (`CI=true`), where they fail.

mod conformance_common;
mod support;

use berth_storage::Backend;
use conformance_common::*;
use reqwest::StatusCode;
use std::time::Duration;
use support::s3::S3Engine;
use support::BerthProcess;

/// The rules every replica and `berth gc` read: one image of
/// [`Client::push_image`] (about 1.5 KB) fits the quota, two do not.
const RULES: &str = "\
[[quota]]
repositories = \"team/**\"
limit = 2500

[[immutable]]
repositories = \"rel/**\"

[[retention]]
repositories = \"ci/**\"
keep-last = 1
";

/// Short timings, the same for the replicas and `berth gc`.
const GC_TIMING: &[&str] = &["--gc-pin-validity", "1s", "--gc-lease-time", "3s"];

struct Bucket {
    engine: S3Engine,
    storage: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Bucket {
    fn new() -> Option<Bucket> {
        let engine = S3Engine::ceph()?;
        let storage = engine.unique_storage();
        let dir = tempfile::tempdir().unwrap();
        let config = support::write_config(dir.path(), RULES);
        Some(Bucket {
            engine,
            storage,
            config,
            _dir: dir,
        })
    }

    fn replica(&self, data: &std::path::Path) -> BerthProcess {
        let mut extra: Vec<String> = ["--no-self-image", "--gc-interval", "0", "--gc-grace", "0s", "--config"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        extra.push(self.config.to_str().unwrap().to_owned());
        extra.extend(GC_TIMING.iter().map(|s| s.to_string()));
        extra.extend(self.engine.serve_args(&self.storage));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        BerthProcess::spawn_with(data, &extra, |cmd| self.engine.configure(cmd))
    }

    /// `berth <command> --storage <bucket> --config <rules> <args>`, run to
    /// completion with the store's credentials in its environment.
    fn cli(&self, command: &str, args: &[&str]) -> support::tools::Output {
        let mut line: Vec<String> = vec![command.into()];
        line.extend(self.engine.serve_args(&self.storage));
        line.extend(["--config".into(), self.config.to_str().unwrap().to_owned()]);
        line.extend(args.iter().map(|s| s.to_string()));
        let mut tool = support::berth_cli(line);
        for (k, v) in self.engine.env() {
            tool = tool.env(k, v);
        }
        tool.timeout(Duration::from_secs(120)).run()
    }
}

impl Drop for Bucket {
    fn drop(&mut self) {
        self.engine.remove(&self.storage);
    }
}

/// Config, layer and manifest of [`Client::push_image`]'s image `seed`,
/// pushed without the manifest's status being asserted.
async fn try_push(c: &Client, repo: &str, tag: &str, seed: u64) -> (StatusCode, String) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = data(seed, 1000 + seed as usize % 100);
    c.push_blob(repo, &config).await;
    c.push_blob(repo, &layer).await;
    let r = c
        .put_manifest(repo, tag, OCI_MANIFEST, &image_manifest(&config, &[&layer]))
        .await;
    (r.status(), text(r).await)
}

async fn quota_used(url: &str) -> u64 {
    let usage = json_body(Client::new(url).get("/berth/v1/usage").await).await;
    usage["quotas"][0]["used"].as_u64().expect("a quota")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_what_every_replica_pushed() {
    let Some(bucket) = Bucket::new() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, b) = (bucket.replica(dirs[0].path()), bucket.replica(dirs[1].path()));
    // Both count the empty quota before anything is pushed.
    assert_eq!(quota_used(&a.url).await, 0);
    assert_eq!(quota_used(&b.url).await, 0);

    Client::new(&a.url).push_image("team/one", "v1", 1).await;
    let (status, body) = try_push(&Client::new(&b.url), "team/two", "v1", 2).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("DENIED") && body.contains("quota exceeded"), "{body}");
    let used = quota_used(&b.url).await;
    assert!((1400..=2500).contains(&used), "b counts a's image: {used}");

    // `berth usage` on the bucket reads the same.
    let out = bucket.cli("usage", &["--json"]);
    assert!(out.success(), "{}", out.describe());
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["quotas"][0]["used"].as_u64(), Some(used), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_has_one_first_push_across_replicas() {
    let Some(bucket) = Bucket::new() else { return };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (a, b) = (bucket.replica(dirs[0].path()), bucket.replica(dirs[1].path()));
    let (ca, cb) = (Client::new(&a.url), Client::new(&b.url));
    for round in 0..4 {
        let tag = format!("1.{round}");
        let seeds = (10 + 2 * round, 11 + 2 * round);
        let (ra, rb) = tokio::join!(
            try_push(&ca, "rel/app", &tag, seeds.0),
            try_push(&cb, "rel/app", &tag, seeds.1)
        );
        let created = [&ra, &rb].iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
        assert_eq!(created, 1, "round {round}: one first push wins: {ra:?} {rb:?}");
        let loser = if ra.0 == StatusCode::CREATED { &rb } else { &ra };
        assert_eq!(loser.0, StatusCode::FORBIDDEN, "{loser:?}");
        assert!(loser.1.contains("immutable"), "{loser:?}");
        // The winner may push its digest again, from either replica.
        let winner_seed = if ra.0 == StatusCode::CREATED { seeds.0 } else { seeds.1 };
        let (again, body) = try_push(&cb, "rel/app", &tag, winner_seed).await;
        assert_eq!(again, StatusCode::CREATED, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_gc_on_the_bucket_applies_retention_beside_the_replicas() {
    let Some(bucket) = Bucket::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = bucket.replica(dir.path());
    let c = Client::new(&server.url);
    let (_, old) = c.push_image("ci/app", "old", 20).await;
    // Store times have a resolution of a second: `new` is newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.push_image("ci/app", "new", 21).await;
    // Past the pushes' pins (2 x 1 s validity, + 1 s of store-time
    // resolution), so the pass also collects the image `old` leaves.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let gc = |dry: bool| {
        let mut args = vec!["--grace", "0s", "--json"];
        args.extend(GC_TIMING);
        if dry {
            args.push("--dry-run");
        }
        let out = bucket.cli("gc", &args);
        assert!(out.success(), "{}", out.describe());
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    let dry = gc(true);
    assert_eq!(dry["tags_deleted"], serde_json::json!(["ci/app:old"]), "{dry}");
    let tags = json_body(c.get("/v2/ci/app/tags/list").await).await;
    assert_eq!(
        tags["tags"],
        serde_json::json!(["new", "old"]),
        "a dry run removes nothing"
    );

    let report = gc(false);
    assert_eq!(report["tags_deleted"], serde_json::json!(["ci/app:old"]), "{report}");
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 2, "{report}");
    let tags = json_body(c.get("/v2/ci/app/tags/list").await).await;
    assert_eq!(tags["tags"], serde_json::json!(["new"]));
    let store = bucket.engine.backend(&bucket.storage).await;
    let claims = store.list("berth/v1/gc/tag-claims/ci/app/_tag").await.unwrap();
    assert!(claims.is_empty(), "no claim left: {claims:?}");
    let gone = c
        .req(reqwest::Method::GET, &format!("/v2/ci/app/manifests/{old}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let kept = c
        .req(reqwest::Method::GET, "/v2/ci/app/manifests/new")
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), StatusCode::OK);
}
