//! Garbage collection on S3 with several replicas on one bucket (Ceph RGW):
//! pushers on every replica, sharing layers, moving tags and deleting
//! images, while the replicas run passes in a loop (one at a time: the
//! lease), and are `kill -9`'d at random moments and started again. At the
//! end every acknowledged image pulls whole from every replica, and after a
//! last pass what nothing references is gone from the bucket.
//!
//! Ceph is named by `BERTH_TEST_S3_CEPH_*`; without them the test says so and
//! passes, except in CI (`CI=true`), where it fails.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::s3::S3Engine;
use support::BerthProcess;

/// Concurrent pushers (as the filesystem's stress test), and the fewest
/// images each pushes: they go on until the replicas have been killed a few
/// times and then have collected a few times (`ENOUGH_KILLS`,
/// `ENOUGH_PASSES`), however fast the store is, or until `PUSH_FOR_AT_MOST`
/// has passed.
const PUSHERS: u64 = 16;
const IMAGES: u64 = 4;
const ENOUGH_KILLS: usize = 2;
const ENOUGH_PASSES: usize = 2;
const PUSH_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// Short timings, the same on every replica: a pin protects its blobs for
/// 2 s (twice the validity), a dead collector's lease and claims last 3 s.
const GC_ARGS: &[&str] = &[
    "--no-self-image",
    "--gc-interval",
    "0",
    "--gc-grace",
    "0s",
    "--gc-pin-validity",
    "1s",
    "--gc-lease-time",
    "3s",
];

fn replica(engine: &S3Engine, storage: &str, data: &std::path::Path) -> BerthProcess {
    let mut extra: Vec<String> = GC_ARGS.iter().map(|s| s.to_string()).collect();
    extra.extend(engine.serve_args(storage));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    BerthProcess::spawn_with(data, &extra, |cmd| engine.configure(cmd))
}

/// One acknowledged image: its tag, manifest digest and blobs.
#[derive(Clone)]
struct Pushed {
    tag: String,
    digest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

/// What one pusher did.
#[derive(Default)]
struct Done {
    kept: Vec<Pushed>,
    deleted: Vec<Pushed>,
    /// Pushes whose manifest PUT was sent but not answered.
    cut: Vec<Pushed>,
    /// Blobs uploaded and never referenced.
    orphans: Vec<String>,
}

/// How a push ended.
enum Push {
    Acked(Pushed),
    /// The replica went away before answering. `Some` when the manifest PUT
    /// had been sent: it may have landed, whole or in part (its revision
    /// written, its tag not yet), and the repository then holds the image.
    Cut(Option<Pushed>),
}

impl Push {
    fn acked(self) -> Option<Pushed> {
        match self {
            Push::Acked(p) => Some(p),
            Push::Cut(_) => None,
        }
    }
}

/// Pushes config and layers, then the manifest; a manifest refused because a
/// collector deleted one of its blobs meanwhile is pushed again from the
/// blobs, as a client does.
async fn push(c: &Client, repo: &str, tag: &str, blobs: &[Vec<u8>]) -> Push {
    let layers: Vec<&[u8]> = blobs[1..].iter().map(Vec::as_slice).collect();
    let manifest = image_manifest(&blobs[0], &layers);
    let image = Pushed {
        tag: tag.to_owned(),
        digest: sha256(&manifest),
        blobs: blobs.iter().map(|b| (sha256(b), b.clone())).collect(),
    };
    'attempt: for _attempt in 0..10 {
        for b in blobs {
            let Ok(loc) = c
                .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(b)))
                .header("content-type", "application/octet-stream")
                .body(b.clone())
                .send()
                .await
            else {
                return Push::Cut(None);
            };
            match loc.status() {
                StatusCode::CREATED => {}
                StatusCode::SERVICE_UNAVAILABLE => {
                    unavailable(loc).await;
                    continue 'attempt;
                }
                s => panic!("blob POST answered {s}: {}", text(loc).await),
            }
        }
        let Ok(r) = c
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
        else {
            return Push::Cut(Some(image));
        };
        match r.status() {
            StatusCode::CREATED => return Push::Acked(image),
            StatusCode::BAD_REQUEST => {
                let body = text(r).await;
                assert!(body.contains("MANIFEST_BLOB_UNKNOWN"), "{body}");
            }
            StatusCode::SERVICE_UNAVAILABLE => unavailable(r).await,
            s => panic!("manifest PUT answered {s}: {}", text(r).await),
        }
    }
    panic!("{repo}:{tag} refused ten times in a row")
}

/// A 503 is a transient refusal, nothing acknowledged (on this machine: a
/// push slower than the test's 1 s pin validity under load); a client waits
/// and pushes again.
async fn unavailable(r: reqwest::Response) {
    assert!(header(&r, "retry-after").is_some(), "a 503 says when to retry");
    let body = text(r).await;
    assert!(body.contains("TOOMANYREQUESTS"), "{body}");
    eprintln!("503, pushing again: {body}");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// Deletes a manifest through whichever replica is up, until one answers:
/// 202, or 404 when an attempt cut off by a kill had landed.
async fn delete_manifest(urls: &Mutex<Vec<String>>, repo: &str, digest: &str) {
    for attempt in 0..30usize {
        let url = urls.lock().unwrap()[attempt % 3].clone();
        let sent = Client::new(&url)
            .req(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"))
            .send()
            .await;
        match sent.map(|r| r.status()) {
            Ok(StatusCode::ACCEPTED) => return,
            Ok(StatusCode::NOT_FOUND) if attempt > 0 => return,
            Ok(s) => panic!("DELETE {digest} answered {s}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("DELETE {digest}: no replica answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_collect_while_pushing_and_are_killed_at_random() {
    let Some(engine) = S3Engine::ceph() else { return };
    let storage = engine.unique_storage();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<BerthProcess> = dirs.iter().map(|d| replica(&engine, &storage, d.path())).collect();
    let urls = Arc::new(Mutex::new(replicas.iter().map(|r| r.url.clone()).collect::<Vec<_>>()));
    let mut replicas: Vec<Option<BerthProcess>> = replicas.into_iter().map(Some).collect();
    let repo = "gc/stress";

    // Two collectors: each POSTs /berth/v1/gc to the replicas in turn (one
    // starting at A, one at B), until told to stop; the lease lets one pass
    // run at a time, the other is answered 409.
    let stop = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicUsize::new(0));
    let freed = Arc::new(AtomicUsize::new(0));
    let collectors: Vec<_> = (0..2)
        .map(|start| {
            let (urls, stop, passes, busy, freed) =
                (urls.clone(), stop.clone(), passes.clone(), busy.clone(), freed.clone());
            tokio::spawn(async move {
                let mut i = start;
                while !stop.load(Ordering::Relaxed) {
                    let url = urls.lock().unwrap()[i % 3].clone();
                    i += 1;
                    let Ok(r) = Client::new(&url).req(Method::POST, "/berth/v1/gc").send().await else {
                        continue; // the replica being killed
                    };
                    match r.status() {
                        StatusCode::OK => {
                            let report = json_body(r).await;
                            eprintln!("pass: {report}");
                            passes.fetch_add(1, Ordering::Relaxed);
                            freed.fetch_add(report["blobs_deleted"].as_u64().unwrap() as usize, Ordering::Relaxed);
                        }
                        StatusCode::CONFLICT => {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        s => panic!("a pass answered {s}: {}", text(r).await),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();

    // Pushers: 16, spread over the replicas, sharing layers; each also moves
    // a tag and deletes one of its images.
    let enough = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for p in 0..PUSHERS {
        let (urls, enough) = (urls.clone(), enough.clone());
        pushers.push(tokio::spawn(async move {
            let mut done = Done::default();
            let mut latest = None;
            for n in 0.. {
                if n >= IMAGES && enough.load(Ordering::Relaxed) {
                    break;
                }
                let url = urls.lock().unwrap()[((p + n) % 3) as usize].clone();
                let c = Client::new(&url);
                let blobs = vec![
                    format!("{{\"pusher\":{p},\"image\":{n}}}").into_bytes(),
                    data(1_000_000 + p * 10_000 + n, 20_000 + (p * 7 + n % 50) as usize * 1000),
                    data(n % 3, 50_000),
                ];
                let tag = format!("p{p}-i{n}");
                // An orphan: uploaded, never referenced.
                let orphan = data(2_000_000 + p * 10_000 + n, 3_000);
                done.orphans.push(sha256(&orphan));
                let image = match push(&c, repo, &tag, &blobs).await {
                    Push::Acked(image) => image,
                    // The replica was killed under the push: not acknowledged.
                    Push::Cut(sent) => {
                        done.cut.extend(sent);
                        continue;
                    }
                };
                // The "latest" tag of this pusher moves with each image.
                let moved = push(&c, repo, &format!("p{p}-latest"), &blobs).await.acked();
                if n == 2 {
                    // Deleted: its own layer becomes garbage.
                    delete_manifest(&urls, repo, &image.digest).await;
                    done.deleted.push(image);
                    latest = None;
                } else {
                    done.kept.push(image);
                    latest = moved;
                }
                let _ = c
                    .req(
                        Method::POST,
                        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&orphan)),
                    )
                    .body(orphan)
                    .send()
                    .await;
            }
            done.kept.extend(latest);
            done
        }));
    }

    // Meanwhile replicas are killed (perhaps in a pass, holding the lease or
    // a claim, or under a push) at random moments and started again, until
    // the pushers are done. The seed is printed to replay a failure.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut kills = 0;
    let pushing = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(1500 + next(3000))).await;
        if pushers.iter().all(|p| p.is_finished()) {
            break;
        }
        if kills >= ENOUGH_KILLS {
            // Left alone, so that passes finish (a pass cut by a kill holds
            // the lease for its lease time).
            if passes.load(Ordering::Relaxed) >= ENOUGH_PASSES || pushing.elapsed() > PUSH_FOR_AT_MOST {
                enough.store(true, Ordering::Relaxed);
            }
            continue;
        }
        let victim = next(3) as usize;
        let mut killed = replicas[victim].take().unwrap();
        killed.child.kill().unwrap();
        let _ = killed.child.wait();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(next(1000))).await;
        let restarted = replica(&engine, &storage, dirs[victim].path());
        urls.lock().unwrap()[victim] = restarted.url.clone();
        replicas[victim] = Some(restarted);
    }

    let mut all = Done::default();
    for p in pushers {
        let done = p.await.unwrap();
        all.kept.extend(done.kept);
        all.deleted.extend(done.deleted);
        all.cut.extend(done.cut);
        all.orphans.extend(done.orphans);
    }
    let Done {
        kept,
        deleted,
        cut,
        orphans,
    } = all;
    stop.store(true, Ordering::Relaxed);
    for c in collectors {
        c.await.unwrap();
    }
    let passes = passes.load(Ordering::Relaxed);
    let freed = freed.load(Ordering::Relaxed);
    eprintln!(
        "{} images kept, {} deleted, {} cut at the manifest; {kills} kills; {passes} passes freed {freed} blobs, {} refused as busy",
        kept.len(),
        deleted.len(),
        cut.len(),
        busy.load(Ordering::Relaxed)
    );
    assert!(passes >= ENOUGH_PASSES, "the collectors ran ({passes} passes)");
    assert!(kills >= ENOUGH_KILLS, "replicas were killed ({kills} times)");
    assert!(freed > 0, "passes during the pushes deleted blobs");
    assert!(kept.len() >= 30, "most pushes were acknowledged ({})", kept.len());

    // Quiet now: after the pins' horizon (and the killed replica's lease
    // and claims) have passed, one last pass takes what nothing references.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let urls: Vec<String> = urls.lock().unwrap().clone();
    let last = Client::new(&urls[0])
        .req(Method::POST, "/berth/v1/gc")
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), StatusCode::OK, "{}", text(last).await);
    let report = json_body(last).await;
    eprintln!("last pass: {report}");

    // Every acknowledged image pulls whole, from every replica.
    for url in &urls {
        let c = Client::new(url);
        for image in &kept {
            let status = manifest_status(&c, repo, &image.digest).await;
            assert_eq!(status, StatusCode::OK, "{}@{}", image.tag, image.digest);
            assert_blobs_whole(&c, repo, image).await;
        }
    }

    // What is left in the bucket is exactly what the kept images name.
    let backend = engine.backend(&storage).await;
    let mut stored = BTreeSet::new();
    let root = berth_storage::layout::blobs_root();
    use berth_storage::Backend;
    for alg in backend.list(&root).await.unwrap() {
        for prefix in backend.list(&format!("{root}/{alg}")).await.unwrap() {
            for hex in backend.list(&format!("{root}/{alg}/{prefix}")).await.unwrap() {
                let key = format!("{root}/{alg}/{prefix}/{hex}/data");
                if backend.head(&key).await.is_ok() {
                    stored.insert(format!("{alg}:{hex}"));
                }
            }
        }
    }
    let mut wanted = BTreeSet::new();
    for image in &kept {
        wanted.insert(image.digest.clone());
        wanted.extend(image.blobs.iter().map(|(d, _)| d.clone()));
    }
    // Beyond those, only a cut push's image may stay, if its manifest PUT
    // landed before the kill (perhaps its revision without its tag): the
    // repository holds it, so the collector keeps it, and it must be whole.
    let mut landed = BTreeSet::new();
    let c = Client::new(&urls[0]);
    for image in &cut {
        let status = manifest_status(&c, repo, &image.digest).await;
        if status == StatusCode::NOT_FOUND {
            continue;
        }
        assert_eq!(status, StatusCode::OK, "cut {}@{}", image.tag, image.digest);
        assert_blobs_whole(&c, repo, image).await;
        landed.insert(image.digest.clone());
        landed.extend(image.blobs.iter().map(|(d, _)| d.clone()));
    }
    eprintln!(
        "{} cut pushes had landed",
        cut.iter().filter(|i| landed.contains(&i.digest)).count()
    );
    for d in stored.difference(&wanted) {
        assert!(landed.contains(d), "{d} is stored but nothing references it");
    }
    for img in &deleted {
        assert!(
            !stored.contains(&img.digest),
            "deleted manifest {} still stored",
            img.digest
        );
    }
    for orphan in &orphans {
        assert!(!stored.contains(orphan), "orphan {orphan} still stored");
    }
    drop(replicas);
    engine.remove(&storage);
}

async fn manifest_status(c: &Client, repo: &str, digest: &str) -> StatusCode {
    c.req(Method::GET, &format!("/v2/{repo}/manifests/{digest}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .status()
}

/// Every blob of `image` is served, with its bytes.
async fn assert_blobs_whole(c: &Client, repo: &str, image: &Pushed) {
    for (digest, bytes) in &image.blobs {
        let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{}: blob {digest} lost", image.tag);
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..], "{}: {digest}", image.tag);
    }
}

/// `--delete-untagged-after` on S3: an image left untagged by a moved tag
/// goes in a pass once old enough (its own layer with it); the tagged one
/// stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_manifests_go_on_s3() {
    let Some(engine) = S3Engine::ceph() else { return };
    let storage = engine.unique_storage();
    let dir = tempfile::tempdir().unwrap();
    let mut extra: Vec<String> = GC_ARGS.iter().map(|s| s.to_string()).collect();
    extra.extend(["--delete-untagged-after".into(), "0s".into()]);
    extra.extend(engine.serve_args(&storage));
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let server = BerthProcess::spawn_with(dir.path(), &extra, |cmd| engine.configure(cmd));
    let c = Client::new(&server.url);
    let repo = "gc/untagged";
    let old = vec![b"{\"old\":1}".to_vec(), data(71, 30_000)];
    let new = vec![b"{\"new\":1}".to_vec(), data(72, 30_000)];
    let untagged = push(&c, repo, "v1", &old).await.acked().expect("pushed");
    let tagged = push(&c, repo, "v1", &new).await.acked().expect("pushed");
    // Past the pins' horizon (2 x 1 s validity, + 1 s of store-time resolution).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let r = c.req(Method::POST, "/berth/v1/gc").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let report = json_body(r).await;
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    let gone = c
        .req(Method::GET, &format!("/v2/{repo}/manifests/{}", untagged.digest))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    // The untagged image's own layer and config went with it.
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 2, "{report}");
    for (digest, bytes) in &tagged.blobs {
        let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(&r.bytes().await.unwrap()[..], &bytes[..]);
    }
    drop(server);
    engine.remove(&storage);
}

/// Scheduled passes (`--gc-interval`) on two replicas of one bucket: each
/// replica's timer fires, the lease lets one pass run at a time (the other
/// replica's pass is skipped with a log line, or runs after), and a blob
/// nothing references goes without anybody asking, while the tagged image
/// stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_passes_run_on_replicas_of_one_bucket() {
    let Some(engine) = S3Engine::ceph() else { return };
    let storage = engine.unique_storage();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let scheduled = |data: &std::path::Path| {
        let mut extra: Vec<String> = GC_ARGS.iter().map(|s| s.to_string()).collect();
        let at = extra.iter().position(|a| a == "--gc-interval").unwrap();
        extra[at + 1] = "1s".into();
        extra.extend(engine.serve_args(&storage));
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        BerthProcess::spawn_with(data, &extra, |cmd| engine.configure(cmd))
    };
    let replicas = [scheduled(dirs[0].path()), scheduled(dirs[1].path())];
    let c = Client::new(&replicas[0].url);
    let repo = "gc/scheduled";
    let image = push(&c, repo, "v1", &[b"{\"s\":1}".to_vec(), data(81, 20_000)])
        .await
        .acked()
        .expect("pushed");
    let orphan = data(82, 5_000);
    let orphan_digest = Client::new(&replicas[1].url).push_blob(repo, &orphan).await;

    use berth_storage::Backend;
    let store = engine.backend(&storage).await;
    let blob_key = |d: &str| berth_storage::layout::blob_data(&d.parse().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match store.head(&blob_key(&orphan_digest)).await {
            Err(e) if e.is_not_found() => break,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no scheduled pass removed the orphan within a minute"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let passed = |line: &serde_json::Value| line["message"] == "garbage collection pass";
    let ran: usize = replicas
        .iter()
        .map(|r| r.log_lines().iter().filter(|l| passed(l)).count())
        .sum();
    assert!(ran >= 1, "the passes are logged");
    for (digest, bytes) in &image.blobs {
        for r in &replicas {
            let got = Client::new(&r.url).get(&format!("/v2/{repo}/blobs/{digest}")).await;
            assert_eq!(got.status(), StatusCode::OK, "{digest}");
            assert_eq!(&got.bytes().await.unwrap()[..], &bytes[..]);
        }
    }
    drop(replicas);
    engine.remove(&storage);
}
