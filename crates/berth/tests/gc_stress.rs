//! Garbage collection under fire, on the filesystem: 16 concurrent pushers
//! of images that share layers, moving and deleting tags and deleting
//! manifests, while the server collects garbage every 200 ms with no grace
//! period and is `kill -9`'d and restarted at random moments. At the end,
//! every acknowledged image pulls whole with the right digests, and after a
//! final pass the blob store holds exactly the blobs of the live manifests
//! (counted in bytes).
//!
//! Every operation is retried until the server gives a definite answer, so
//! the test knows the state each acknowledged write left (each pusher owns
//! its repository; the layers are shared between all of them).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::images::sha256_digest;
use support::BerthProcess;

const PUSHERS: usize = 16;
const SHARED_LAYERS: usize = 24;
const RUN_FOR: Duration = Duration::from_secs(25);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// xorshift64*: reproducible from the seed the test prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[derive(Clone)]
struct Blob {
    digest: String,
    bytes: Arc<Vec<u8>>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes: Arc::new(bytes),
        }
    }
}

#[derive(Clone)]
struct PushedImage {
    manifest: Blob,
    blobs: Vec<Blob>,
}

fn image(rng: &mut Rng, shared: &[Blob]) -> PushedImage {
    let config = Blob::new(format!("{{\"n\":{}}}", rng.next()).into_bytes());
    let len = 1024 + rng.below(64 * 1024) as usize;
    let own = Blob::new(rng.bytes(len));
    let a = shared[rng.below(shared.len() as u64) as usize].clone();
    let b = shared[rng.below(shared.len() as u64) as usize].clone();
    let mut layers = vec![a, own];
    if b.digest != layers[0].digest {
        layers.push(b);
    }
    let d = |b: &Blob, t: &str| serde_json::json!({"mediaType": t, "digest": b.digest, "size": b.bytes.len()});
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": d(&config, "application/vnd.oci.image.config.v1+json"),
        "layers": layers.iter().map(|l| d(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    PushedImage {
        manifest: Blob::new(serde_json::to_vec(&manifest).unwrap()),
        blobs,
    }
}

/// The server's base URL; requests fail while it is down.
struct Target {
    url: String,
}

/// An answer, or a reason to try again (connection refused or cut: the
/// server was killed).
async fn send(req: reqwest::RequestBuilder) -> Option<(u16, bytes::Bytes, reqwest::header::HeaderMap)> {
    let r = req.timeout(Duration::from_secs(20)).send().await.ok()?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.ok()?;
    Some((status, body, headers))
}

/// Retries `op` until it returns `Some` (a definite answer).
async fn until<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = op().await {
            return v;
        }
        assert!(Instant::now() < give_up, "no definite answer for 90 s");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Makes `blob` present in `repo`: nothing if it is, a mount, or an upload.
async fn ensure_blob(c: &reqwest::Client, t: &Target, repo: &str, blob: &Blob) -> Option<()> {
    let (status, _, _) = send(c.head(format!("{}/v2/{repo}/blobs/{}", t.url, blob.digest))).await?;
    if status == 200 {
        return Some(());
    }
    let (status, _, headers) =
        send(c.post(format!("{}/v2/{repo}/blobs/uploads/?mount={}", t.url, blob.digest))).await?;
    match status {
        201 => Some(()),
        202 => {
            let location = headers.get("location")?.to_str().ok()?.to_owned();
            let url = if location.starts_with('/') {
                format!("{}{location}", t.url)
            } else {
                location
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            let (status, body, _) = send(
                c.put(format!("{url}{sep}digest={}", blob.digest))
                    .body(blob.bytes.to_vec()),
            )
            .await?;
            match status {
                201 => Some(()),
                // The session's last state was lost with a kill: start over.
                404 | 416 => None,
                other => panic!("upload answered {other}: {}", String::from_utf8_lossy(&body)),
            }
        }
        other => panic!("mount answered {other}"),
    }
}

/// Pushes `img` under `tag` until berth acknowledges it.
async fn push(c: &reqwest::Client, t: &Target, repo: &str, tag: &str, img: &PushedImage) {
    until(|| async {
        for b in &img.blobs {
            ensure_blob(c, t, repo, b).await?;
        }
        let (status, body, _) = send(
            c.put(format!("{}/v2/{repo}/manifests/{tag}", t.url))
                .header("content-type", OCI_MANIFEST)
                .body(img.manifest.bytes.to_vec()),
        )
        .await?;
        match status {
            201 => Some(()),
            // A blob went between the check and the PUT (collected, or the
            // upload never finished): push again, as clients do.
            400 if String::from_utf8_lossy(&body).contains("MANIFEST_BLOB_UNKNOWN") => None,
            other => panic!("manifest PUT answered {other}: {}", String::from_utf8_lossy(&body)),
        }
    })
    .await
}

/// Deletes `reference` until berth answers 202, or 404 after a failed
/// attempt (which may have landed before a kill); a 404 at the first try
/// means an acknowledged write was lost.
async fn delete(c: &reqwest::Client, t: &Target, repo: &str, reference: &str) {
    let mut first = true;
    until(|| {
        let was_first = std::mem::replace(&mut first, false);
        async move {
            let (status, body, _) = send(c.delete(format!("{}/v2/{repo}/manifests/{reference}", t.url))).await?;
            let ok = status == 202 || (status == 404 && !was_first);
            assert!(
                ok,
                "delete {repo}/{reference}: {status} {}",
                String::from_utf8_lossy(&body)
            );
            Some(())
        }
    })
    .await
}

/// What one pusher's acknowledged writes left in its repository.
#[derive(Default)]
struct RepoState {
    tags: BTreeMap<String, String>,
    live: HashMap<String, PushedImage>,
}

async fn pusher(id: usize, seed: u64, shared: Arc<Vec<Blob>>, t: Arc<Target>, stop: Arc<AtomicBool>) -> RepoState {
    let c = reqwest::Client::new();
    let repo = format!("stress/p{id}");
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut state = RepoState::default();
    while !stop.load(Ordering::Relaxed) {
        let roll = rng.below(10);
        if roll < 6 || state.live.is_empty() {
            // A new image under one of three tags: tags move.
            let img = image(&mut rng, &shared);
            let tag = format!("t{}", rng.below(3));
            push(&c, &t, &repo, &tag, &img).await;
            state.tags.insert(tag, img.manifest.digest.clone());
            state.live.insert(img.manifest.digest.clone(), img);
        } else if roll < 8 {
            let Some(tag) = state.tags.keys().next().cloned() else {
                continue;
            };
            delete(&c, &t, &repo, &tag).await;
            state.tags.remove(&tag);
        } else {
            let pick = rng.below(state.live.len() as u64) as usize;
            let digest = state.live.keys().nth(pick).unwrap().clone();
            delete(&c, &t, &repo, &digest).await;
            state.live.remove(&digest);
            state.tags.retain(|_, d| d != &digest);
        }
    }
    state
}

fn serve(data: &Path, listen: &str) -> BerthProcess {
    let data = data.display().to_string();
    BerthProcess::spawn_args(&[
        "serve",
        "--listen",
        listen,
        "--log-format",
        "json",
        "--log",
        "warn,berth=info",
        "--data",
        &data,
        "--no-self-image",
        "--gc-interval",
        "200ms",
        "--gc-grace",
        "0",
    ])
}

/// Every blob file in the blob store: digest -> size.
fn stored_blobs(data: &Path) -> HashMap<String, u64> {
    let root = data.join("docker/registry/v2/blobs/sha256");
    let mut out = HashMap::new();
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for dir in std::fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
            if let Ok(meta) = std::fs::metadata(dir.path().join("data")) {
                out.insert(format!("sha256:{}", dir.file_name().to_string_lossy()), meta.len());
            }
        }
    }
    out
}

async fn verify(c: &reqwest::Client, url: &str, states: &[RepoState]) {
    for (i, s) in states.iter().enumerate() {
        let repo = format!("stress/p{i}");
        for (tag, digest) in &s.tags {
            let (status, body, _) = send(
                c.get(format!("{url}/v2/{repo}/manifests/{tag}"))
                    .header("accept", OCI_MANIFEST),
            )
            .await
            .expect("server up");
            assert_eq!(status, 200, "{repo}:{tag}");
            assert_eq!(
                &sha256_digest(&body),
                digest,
                "{repo}:{tag} points at its last acknowledged push"
            );
        }
        for (digest, img) in &s.live {
            let (status, body, _) = send(
                c.get(format!("{url}/v2/{repo}/manifests/{digest}"))
                    .header("accept", OCI_MANIFEST),
            )
            .await
            .expect("server up");
            assert_eq!(status, 200, "{repo}@{digest}");
            assert_eq!(&sha256_digest(&body), digest);
            for b in &img.blobs {
                let (status, body, _) = send(c.get(format!("{url}/v2/{repo}/blobs/{}", b.digest)))
                    .await
                    .expect("server up");
                assert_eq!(status, 200, "{repo}@{digest}: blob {} lost", b.digest);
                assert_eq!(sha256_digest(&body), b.digest, "{repo}: blob {} damaged", b.digest);
            }
        }
    }
}

#[test]
fn pushes_survive_a_looping_collector_and_kill_9_and_garbage_is_gone_at_the_end() {
    let seed = std::env::var("BERTH_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("BERTH_STRESS_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = serve(&data, "127.0.0.1:0");
    let listen = first.addr.to_string();
    let target = Arc::new(Target { url: first.url.clone() });
    let server = Arc::new(Mutex::new(Some(first)));

    let mut rng = Rng(seed);
    let shared: Arc<Vec<Blob>> = Arc::new(
        (0..SHARED_LAYERS)
            .map(|_| {
                let len = 4096 + rng.below(128 * 1024) as usize;
                Blob::new(rng.bytes(len))
            })
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));

    // The killer: kill -9 at random moments, restart on the same address.
    let kills = {
        let (server, stop, data, listen) = (server.clone(), stop.clone(), data.clone(), listen.clone());
        let mut rng = Rng(seed.rotate_left(17) | 1);
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(300 + rng.below(1200)));
                let mut s = server.lock().unwrap();
                if let Some(mut p) = s.take() {
                    // SIGKILL: no chance to finish anything.
                    p.child.kill().unwrap();
                    p.child.wait().unwrap();
                    kills += 1;
                }
                std::thread::sleep(Duration::from_millis(rng.below(200)));
                *s = Some(serve(&data, &listen));
            }
            kills
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let states: Vec<RepoState> = rt.block_on(async {
        let tasks: Vec<_> = (0..PUSHERS)
            .map(|i| tokio::spawn(pusher(i, seed, shared.clone(), target.clone(), stop.clone())))
            .collect();
        tokio::time::sleep(RUN_FOR).await;
        stop.store(true, Ordering::Relaxed);
        let mut states = Vec::new();
        for t in tasks {
            states.push(t.await.unwrap());
        }
        states
    });
    let kills = kills.join().unwrap();
    let acknowledged: usize = states.iter().map(|s| s.live.len()).sum();
    eprintln!("{kills} kills; {acknowledged} live images");
    assert!(kills >= 5, "the server was killed {kills} times");

    // A clean restart on what the last kill left, then every acknowledged image.
    drop(server.lock().unwrap().take());
    let last = serve(&data, &listen);
    let c = reqwest::Client::new();
    rt.block_on(verify(&c, &last.url, &states));

    // A final pass: what is left is exactly the blobs of the live manifests.
    let (status, report) = support::admin::http("POST", &format!("{}/berth/v1/gc", last.url));
    assert_eq!(status, 200, "{report}");
    let mut expected: HashMap<String, u64> = HashMap::new();
    for s in &states {
        for (d, img) in &s.live {
            expected.insert(d.clone(), img.manifest.bytes.len() as u64);
            for b in &img.blobs {
                expected.insert(b.digest.clone(), b.bytes.len() as u64);
            }
        }
    }
    let stored = stored_blobs(&data);
    let extra: HashSet<&String> = stored.keys().filter(|d| !expected.contains_key(*d)).collect();
    let missing: HashSet<&String> = expected.keys().filter(|d| !stored.contains_key(*d)).collect();
    assert!(missing.is_empty(), "live blobs missing: {missing:?}");
    assert!(extra.is_empty(), "{} unreferenced blobs left: {report}", extra.len());
    let (stored_bytes, expected_bytes): (u64, u64) = (stored.values().sum(), expected.values().sum());
    assert_eq!(stored_bytes, expected_bytes);
    eprintln!(
        "after the final pass: {} blobs, {expected_bytes} bytes, exactly the live ones; the pass freed {}",
        stored.len(),
        report["bytes_freed"]
    );
    rt.block_on(verify(&c, &last.url, &states));
}
