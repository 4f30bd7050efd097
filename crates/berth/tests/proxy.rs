//! The pull-through mirror against real upstreams on 127.0.0.1: a second
//! berth (plain, and with its token service), CNCF distribution 2.8.2 behind
//! htpasswd, and, for what no real registry does on demand, tiny servers: one
//! that sends a blob's wrong bytes, one that pauses in a blob where told.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::auth::{htpasswd_text, AuthFiles};
use support::distribution::Distribution;
use support::images::{
    layout_blob, layout_ref, sha256_digest, unique, Entry, Image, Index, Layer, OciLayout, Platform,
};
use support::tools::{http_get, post_blob, skopeo, skopeo_copy};
use support::{write_config, BerthProcess};

/// A berth child process with its own data directory, without its self image.
fn berth_process(extra: &[&str]) -> (tempfile::TempDir, BerthProcess) {
    berth_process_with(extra, |_| {})
}

fn berth_process_with(
    extra: &[&str],
    configure: impl FnOnce(&mut std::process::Command),
) -> (tempfile::TempDir, BerthProcess) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--no-self-image"];
    args.extend_from_slice(extra);
    let p = BerthProcess::spawn_with(dir.path(), &args, configure);
    (dir, p)
}

/// How many requests with `method` for exactly `path` a berth logged.
fn requests(p: &BerthProcess, method: &str, path: &str) -> usize {
    p.log_lines()
        .iter()
        .filter(|l| l["method"] == method && l["path"] == path)
        .count()
}

fn log_text(p: &BerthProcess) -> String {
    p.log.lock().unwrap().join("\n")
}

/// A multi-platform image in an OCI layout under `dir`, tagged `v1`.
fn layout_with_index(dir: &Path) -> (OciLayout, Index) {
    let mut layout = OciLayout::create(&dir.join("src"));
    let index = Index::multi_arch(&unique("mirror"));
    layout.add_index("v1", &index);
    (layout, index)
}

/// Pulls `image` (all platforms) into a fresh layout and checks that it is
/// `index`, byte for byte, with every blob.
fn pull_and_check(image: &str, out: &Path, index: &Index) {
    skopeo_copy(&format!("docker://{image}"), &format!("oci:{}:v1", out.display()), true);
    assert_eq!(layout_ref(out, "v1")["digest"], index.index.digest.as_str());
    for img in &index.images {
        layout_blob(out, &img.manifest.digest);
        for b in img.blobs() {
            layout_blob(out, &b.digest);
        }
    }
}

#[test]
fn skopeo_pulls_through_the_prefix_and_ns_and_the_cache_outlives_the_upstream() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    let (_udir, upstream) = berth_process(&[]);
    skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/team/app:v1", upstream.addr),
        true,
    );

    let up = format!("up={}", upstream.url);
    let (mdir, mirror) = berth_process(&["--upstream", &up, "--upstream-tag-ttl", "1s"]);
    pull_and_check(
        &format!("{}/up/team/app:v1", mirror.addr),
        &tmp.path().join("out1"),
        &index,
    );
    // Cached in the normal layout of the proxied repository.
    let cached = mdir
        .path()
        .join("docker/registry/v2/repositories/up/team/app/_manifests/tags/v1/current/link");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), index.index.digest);

    // containerd's hosts.toml mirrors name the registry in ?ns=.
    let (status, body) = http_get(&format!("{}/v2/team/app/manifests/v1?ns=up", mirror.url));
    assert_eq!(status, 200);
    assert_eq!(sha256_digest(&body), index.index.digest);

    // The prefix is read-only; other names take pushes as always.
    let refused = skopeo(["copy", "--dest-tls-verify=false"])
        .arg(layout.reference("v1"))
        .arg(format!("docker://{}/up/team/other:v1", mirror.addr))
        .fails();
    assert!(
        refused.stderr.contains("read-only") || refused.stderr.contains("denied"),
        "{}",
        refused.describe()
    );
    skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/local/app:v1", mirror.addr),
        true,
    );

    // The upstream goes away: the tag, past its TTL, is served stale, and
    // the whole image still pulls from the cache.
    drop(upstream);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, body) = http_get(&format!("{}/v2/up/team/app/manifests/v1", mirror.url));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(sha256_digest(&body), index.index.digest);
    let stale = mirror.wait_for_log(Duration::from_secs(5), |l| {
        l["message"].as_str().is_some_and(|m| m.contains("stale")) && l["tag"] == "v1"
    });
    assert!(stale.is_some(), "no stale-serving log line: {}", log_text(&mirror));
    pull_and_check(
        &format!("{}/up/team/app:v1", mirror.addr),
        &tmp.path().join("out2"),
        &index,
    );

    // What was never cached is an error in the spec's format, not a hang or a 500.
    let (status, body) = http_get(&format!("{}/v2/up/team/app/manifests/never-pulled", mirror.url));
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(err["errors"][0]["code"], "UNKNOWN");
}

#[test]
fn distribution_behind_htpasswd_with_a_dead_first_url_and_basic_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    let htpasswd = tmp.path().join("htpasswd");
    std::fs::write(&htpasswd, htpasswd_text(&[("mirror", "s3cret-pw")])).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dist = Distribution::start_with_htpasswd(root.path(), Some(&htpasswd));
    skopeo([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        "mirror:s3cret-pw",
    ])
    .arg(layout.reference("v1"))
    .arg(format!("docker://{}/team/app:v1", dist.host))
    .ok();

    // Nothing listens on the first URL: the mirror goes on to the second.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = write_config(
        tmp.path(),
        &format!(
            "[[upstream]]\nprefix = \"dist\"\nurls = [\"http://{dead}\", \"http://{}\"]\n\
             username = \"mirror\"\npassword-env = \"TEST_MIRROR_PASSWORD\"\ntimeout = \"5s\"\n",
            dist.host
        ),
    );
    let config = config.display().to_string();
    let (_mdir, mirror) = berth_process_with(&["--config", &config], |c| {
        c.env("TEST_MIRROR_PASSWORD", "s3cret-pw");
    });
    pull_and_check(
        &format!("{}/dist/team/app:v1", mirror.addr),
        &tmp.path().join("out"),
        &index,
    );
    let log = log_text(&mirror);
    assert!(
        log.contains(&dead.to_string()),
        "the dead URL was tried and logged: {log}"
    );
    assert!(!log.contains("s3cret-pw"), "the password reached the log");

    // Without credentials the upstream refuses, and the client hears why.
    let (_adir, anonymous) = berth_process(&["--upstream", &format!("dist=http://{}", dist.host)]);
    let (status, body) = http_get(&format!("{}/v2/dist/team/app/manifests/v1", anonymous.url));
    assert_eq!(status, 502);
    assert!(
        String::from_utf8_lossy(&body).contains("Basic credentials"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn token_auth_upstream_with_tokens_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    // Signed-in users pull and push everywhere; anonymous callers nothing.
    let files = AuthFiles::new(&[("puller", "pull-pw-1")], "default = [\"pull\", \"push\"]\n");
    let mut args: Vec<String> = files.args();
    args.push("--token".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_udir, upstream) = berth_process(&args);
    skopeo([
        "copy",
        "--all",
        "--dest-tls-verify=false",
        "--dest-creds",
        "puller:pull-pw-1",
    ])
    .arg(layout.reference("v1"))
    .arg(format!("docker://{}/team/app:v1", upstream.addr))
    .ok();
    let before = requests(&upstream, "GET", "/token");

    let config = write_config(
        tmp.path(),
        &format!(
            "[[upstream]]\nprefix = \"tok\"\nurls = [\"{}\"]\nusername = \"puller\"\npassword-file = {:?}\n",
            upstream.url,
            tmp.path().join("password").display()
        ),
    );
    std::fs::write(tmp.path().join("password"), "pull-pw-1\n").unwrap();
    let config = config.display().to_string();
    let (_mdir, mirror) = berth_process(&["--config", &config]);
    pull_and_check(
        &format!("{}/tok/team/app:v1", mirror.addr),
        &tmp.path().join("out"),
        &index,
    );

    // One token per scope, reused: the pull made far fewer token requests
    // than registry requests (concurrent first requests may each fetch one).
    let tokens = requests(&upstream, "GET", "/token") - before;
    let v2 = upstream
        .log_lines()
        .iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/v2/team/app/")) && l["status"] == 200)
        .count();
    assert!(
        tokens >= 1 && tokens * 2 <= v2,
        "{tokens} token requests for {v2} registry requests"
    );
    assert!(!log_text(&mirror).contains("pull-pw-1"));

    // An anonymous token does not open the repository: a clear 502.
    let (_adir, anonymous) = berth_process(&["--upstream", &format!("tok={}", upstream.url)]);
    let (status, _) = http_get(&format!("{}/v2/tok/team/app/manifests/v1", anonymous.url));
    assert_eq!(status, 502);
}

/// Pseudo-random bytes (xorshift): incompressible, reproducible.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_pulls_of_a_cold_blob_make_one_upstream_fetch_and_ranges_work() {
    let (_udir, upstream) = berth_process(&[]);
    let client = reqwest::Client::new();
    let big = noise(24 << 20, 7);
    let digest = post_blob(&client, &upstream.url, "big/app", big.clone()).await;
    let small = noise(3 << 20, 11);
    let small_digest = post_blob(&client, &upstream.url, "big/app", small.clone()).await;
    let (_mdir, mirror) = berth_process(&["--upstream", &format!("up={}", upstream.url)]);

    let url = format!("{}/v2/up/big/app/blobs/{digest}", mirror.url);
    let pulls = (0..50).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            sha256_digest(&body)
        })
    });
    for pull in futures::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), digest);
    }
    let upstream_path = format!("/v2/big/app/blobs/{digest}");
    assert!(support::wait_until(Duration::from_secs(5), || requests(
        &upstream,
        "GET",
        &upstream_path
    ) >= 1));
    assert_eq!(
        requests(&upstream, "GET", &upstream_path),
        1,
        "one upstream fetch for 50 pulls"
    );
    // Served from the cache now.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(sha256_digest(&r.bytes().await.unwrap()), digest);
    assert_eq!(requests(&upstream, "GET", &upstream_path), 1);

    // A range of a blob that is not cached yet.
    let small_url = format!("{}/v2/up/big/app/blobs/{small_digest}", mirror.url);
    let r = client
        .get(&small_url)
        .header("range", "bytes=1000000-1999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 1000000-1999999/{}", small.len())
    );
    assert_eq!(&r.bytes().await.unwrap()[..], &small[1_000_000..2_000_000]);
    // The fetch behind it went on to cache the whole blob.
    let small_path = format!("/v2/big/app/blobs/{small_digest}");
    let cached = support::wait_until(Duration::from_secs(10), || {
        mirror
            .log_lines()
            .iter()
            .any(|l| l["message"] == "cached a blob from the upstream" && l["digest"] == small_digest.as_str())
    });
    assert!(cached, "{}", log_text(&mirror));
    let r = client.get(&small_url).send().await.unwrap();
    assert_eq!(sha256_digest(&r.bytes().await.unwrap()), small_digest);
    assert_eq!(requests(&upstream, "GET", &small_path), 1);
}

/// Reads a request's head (up to its blank line) from `conn`, byte by byte.
fn request_head(conn: &mut std::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).map(|n| n == 1).unwrap_or(false) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_string()
}

/// An HTTP/1.1 server that has every blob, with the wrong bytes of the right
/// length; counts the blob GETs it answers.
fn lying_upstream(len: usize) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let head = request_head(&mut conn);
            let is_blob = head.contains("/blobs/sha256:");
            let answer = if is_blob && head.starts_with("GET ") {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut a =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").into_bytes();
                a.extend(std::iter::repeat_n(b'x', len));
                a
            } else if is_blob {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").into_bytes()
            } else {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
            };
            let _ = conn.write_all(&answer);
        }
    });
    (format!("http://{addr}"), gets)
}

/// An HTTP/1.1 server with one blob, whose GET stops after each offset in
/// `pauses` until the matching gate is opened; counts the blob GETs.
fn pausing_upstream(blob: Vec<u8>, pauses: Vec<usize>) -> (String, Vec<std::sync::mpsc::Sender<()>>, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let (gates, waits): (Vec<_>, Vec<_>) = pauses.iter().map(|_| std::sync::mpsc::channel::<()>()).unzip();
    std::thread::spawn(move || {
        let mut waits = waits.into_iter();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let head = request_head(&mut conn);
            if !head.contains("/blobs/sha256:") {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let len = blob.len();
            let _ = conn
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n").as_bytes());
            if !head.starts_with("GET ") {
                continue;
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let mut from = 0;
            for &to in &pauses {
                let _ = conn.write_all(&blob[from..to]);
                let _ = conn.flush();
                let _ = waits.next().map(|w| w.recv());
                from = to;
            }
            let _ = conn.write_all(&blob[from..]);
        }
    });
    (format!("http://{addr}"), gates, gets)
}

/// Reads a response to its end in the background, counting the bytes as they
/// come; the task returns the digest of the whole body.
fn read_counting(r: reqwest::Response) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<String>) {
    let got = Arc::new(AtomicUsize::new(0));
    let counter = got.clone();
    let task = tokio::spawn(async move {
        let mut r = r;
        let mut body = Vec::new();
        while let Some(chunk) = r.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
            counter.store(body.len(), Ordering::SeqCst);
        }
        sha256_digest(&body)
    });
    (got, task)
}

async fn wait_for_bytes(got: &AtomicUsize, at_least: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.load(Ordering::SeqCst) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} bytes",
            got.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_joining_a_young_fetch_is_served_live_and_a_late_one_from_the_cache() {
    // Paused after 1 MiB (inside the replay window of 16 MiB) and after 18 MiB
    // (past it).
    let blob = noise(20 << 20, 5);
    let digest = sha256_digest(&blob);
    let (upstream, gates, gets) = pausing_upstream(blob, vec![1 << 20, 18 << 20]);
    let (_mdir, mirror) = berth_process(&["--upstream", &format!("up={upstream}")]);
    let url = format!("{}/v2/up/app/blobs/{digest}", mirror.url);
    let client = reqwest::Client::new();

    let first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let (first_got, first_done) = read_counting(first);
    wait_for_bytes(&first_got, 512 << 10).await;
    // The upstream is paused: a request that joins now is answered from what
    // was sent so far, without waiting for the fetch to end.
    let joined = tokio::time::timeout(Duration::from_secs(20), client.get(&url).send())
        .await
        .expect("a request joining the fetch in its first MiB waited for its end")
        .unwrap();
    assert_eq!(joined.status(), 200);
    let (joined_got, joined_done) = read_counting(joined);
    wait_for_bytes(&joined_got, 512 << 10).await;

    gates[0].send(()).unwrap();
    wait_for_bytes(&first_got, 17 << 20).await;
    // Past the window: a new request waits for the end and reads the cache.
    let late = tokio::spawn(client.get(&url).send());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !late.is_finished(),
        "a request joining after the replay window was answered live"
    );
    gates[1].send(()).unwrap();
    let late = late.await.unwrap().unwrap();
    assert_eq!(late.status(), 200);
    assert_eq!(sha256_digest(&late.bytes().await.unwrap()), digest);
    assert_eq!(first_done.await.unwrap(), digest);
    assert_eq!(joined_done.await.unwrap(), digest);
    assert_eq!(gets.load(Ordering::SeqCst), 1, "one upstream fetch for three pulls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sending_wrong_bytes_caches_nothing_and_the_client_gets_an_error() {
    let blob = noise(300_000, 3);
    let digest = sha256_digest(&blob);
    let (upstream, gets) = lying_upstream(blob.len());
    // A blob that arrives in one chunk fails before any byte could go out:
    // that client gets an error status, not a connection that breaks.
    let small = noise(1000, 4);
    let small_digest = sha256_digest(&small);
    let (small_upstream, _) = lying_upstream(small.len());
    let (mdir, mirror) = berth_process(&[
        "--upstream",
        &format!("liar={upstream}"),
        "--upstream",
        &format!("small={small_upstream}"),
    ]);
    for _ in 0..2 {
        let r = reqwest::get(format!("{}/v2/small/app/blobs/{small_digest}", mirror.url))
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
    }
    let url = format!("{}/v2/liar/app/blobs/{digest}", mirror.url);
    let client = reqwest::Client::new();
    for attempt in 1..=2 {
        let r = client.get(&url).send().await.unwrap();
        let status = r.status();
        match r.bytes().await {
            // Either the error came before the body began...
            Ok(body) => {
                assert_eq!(status, 502, "attempt {attempt}: got {} bytes", body.len());
            }
            // ...or the body broke off: never a whole body of wrong bytes.
            Err(_) => assert_eq!(status, 200),
        }
        assert_eq!(
            gets.load(Ordering::SeqCst),
            attempt,
            "nothing cached: every attempt asks again"
        );
    }
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = mdir
        .path()
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    assert!(!data.exists(), "wrong bytes were stored under {digest}");
    let uploads = mdir.path().join("docker/registry/v2/repositories/liar/app/_uploads");
    let leftovers = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "staged bytes of the failed fetch were left behind");
    assert!(log_text(&mirror).contains("nothing cached"));
}

/// containerd's socket: the one the docker engine runs (tests use a
/// namespace of their own in it).
const CONTAINERD: &str = "/run/docker/containerd/containerd.sock";

#[test]
fn ctr_pulls_through_a_hosts_toml_mirror_with_ns() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    let (_udir, upstream) = berth_process(&[]);
    let name = unique("ctr");
    skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/library/{name}:v1", upstream.addr),
        true,
    );
    let (_mdir, mirror) = berth_process(&["--upstream", &format!("docker.io={}", upstream.url)]);

    let hosts = tmp.path().join("certs.d/docker.io");
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.url
        ),
    )
    .unwrap();
    let namespace = unique("berth-mirror-test");
    let image = format!("docker.io/library/{name}:v1");
    let ctr = |args: &[&str]| {
        support::tools::tool("ctr")
            .args(["--address", CONTAINERD, "--namespace", namespace.as_str()])
            .args(args)
            .timeout(Duration::from_secs(120))
    };
    let hosts_dir = tmp.path().join("certs.d").display().to_string();
    ctr(&["images", "pull", "--hosts-dir", &hosts_dir, &image]).ok();
    let list = ctr(&["images", "list"]).ok().stdout;
    assert!(list.contains(&index.index.digest), "{list}");
    // containerd asked with the plain name and ?ns=docker.io.
    let asked = mirror
        .log_lines()
        .iter()
        .any(|l| l["path"] == format!("/v2/docker.io/library/{name}/manifests/v1") && l["query"] == "ns=docker.io");
    assert!(asked, "{}", log_text(&mirror));
    ctr(&["images", "rm", &image]).ok();
}

/// A docker engine of the test's own (data root, exec root, pidfile and
/// socket in a temporary directory), configured with `daemon.json`; stopped
/// by its PID when dropped. It runs no containers (pulls need none), but it
/// gets a bridge of its own: with `--bridge none` dockerd deletes the
/// machine's `docker0`, and every later `docker run` of the main engine fails
/// ("could not find bridge docker0").
struct Dockerd {
    child: std::process::Child,
    socket: String,
    bridge: String,
    dir: tempfile::TempDir,
}

impl Dockerd {
    fn start(daemon_json: &str) -> Dockerd {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("daemon.json"), daemon_json).unwrap();
        let socket = p("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let bridge = format!("berthmir{}", std::process::id() % 1_000_000);
        let ip = |args: &[&str]| support::tools::tool("ip").args(args).ok();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", "172.31.254.1/24", "dev", &bridge]);
        let mut cmd = std::process::Command::new("dockerd");
        for (flag, value) in [
            ("--config-file", p("daemon.json")),
            ("--data-root", p("data")),
            ("--exec-root", p("exec")),
            ("--pidfile", p("docker.pid")),
            ("-H", format!("unix://{socket}")),
        ] {
            cmd.arg(flag).arg(value);
        }
        let child = cmd
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let d = Dockerd {
            child,
            socket,
            bridge,
            dir,
        };
        let up = support::wait_until(Duration::from_secs(90), || d.docker(&["info"]).run().success());
        assert!(up, "dockerd did not come up: {}", d.log());
        d
    }

    fn docker(&self, args: &[&str]) -> support::tools::Tool {
        support::tools::tool("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket))
            .args(args)
            .timeout(Duration::from_secs(180))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd and unmount; then wait.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

#[test]
fn docker_pulls_docker_hub_names_through_registry_mirrors() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, index) = layout_with_index(tmp.path());
    let (_udir, upstream) = berth_process(&[]);
    let name = unique("hub");
    skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/library/{name}:v1", upstream.addr),
        true,
    );
    let (_mdir, mirror) = berth_process(&[
        "--upstream",
        &format!("docker.io={}", upstream.url),
        "--upstream-root",
        "docker.io",
    ]);
    let dockerd = Dockerd::start(&format!(
        "{{\"registry-mirrors\": [\"{}\"], \"insecure-registries\": [\"{}\"]}}",
        mirror.url, mirror.addr
    ));
    // `NAME:v1` is docker.io/library/NAME:v1, which docker asks the mirror for at the root.
    dockerd.docker(&["pull", &format!("{name}:v1")]).ok();
    let digests = dockerd
        .docker(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            &format!("{name}:v1"),
        ])
        .ok()
        .stdout;
    assert!(digests.contains(&index.index.digest), "{digests}");
    let asked = mirror
        .log_lines()
        .iter()
        .any(|l| l["path"] == format!("/v2/library/{name}/manifests/v1") && l["status"] == 200);
    assert!(asked, "{}", log_text(&mirror));
}

/// The cache's size bound: past it, the least recently pulled image goes
/// (its blobs deleted, the upstream asked again on the next pull); images
/// pulled more recently stay and are served with the upstream gone.
#[test]
fn the_cache_keeps_to_its_size_bound_by_evicting_the_least_recently_pulled_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (_udir, upstream) = berth_process(&[]);
    let mut layout = OciLayout::create(&tmp.path().join("src"));
    // Three images of a little over 1 MiB each (their layers are noise, so gzip keeps them that size).
    let images: Vec<Image> = (0..3)
        .map(|i| {
            let layer = Layer::new(&[Entry::file("noise", noise(1 << 20, 201 + 2 * i))]);
            Image::new(Platform::amd64(), vec![layer], &["/noise"])
        })
        .collect();
    for (i, image) in images.iter().enumerate() {
        layout.add_image(&format!("i{i}"), image);
        skopeo_copy(
            &layout.reference(&format!("i{i}")),
            &format!("docker://{}/cache/img{i}:v1", upstream.addr),
            false,
        );
    }
    let (_mdir, mirror) = berth_process(&[
        "--upstream",
        &format!("up={}", upstream.url),
        "--upstream-cache-size",
        "2600KiB",
        "--upstream-cache-protect",
        "0s",
    ]);
    let pull = |i: usize| {
        let out = tmp.path().join(format!("out-{i}-{}", unique("p")));
        skopeo_copy(
            &format!("docker://{}/up/cache/img{i}:v1", mirror.addr),
            &format!("oci:{}:v1", out.display()),
            false,
        );
    };
    // img0, img1, img2, then img0 again: img1 is the least recently pulled.
    for i in [0, 1, 2, 0] {
        pull(i);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let report = support::admin::gc_pass(&mirror.url);
    assert_eq!(report["cache_images_evicted"], 1, "{report}");
    // An image pulled within the protection (default 10 minutes) stays, over the bound or not.
    let (_pdir, protected) = berth_process(&[
        "--upstream",
        &format!("up={}", upstream.url),
        "--upstream-cache-size",
        "1KiB",
    ]);
    skopeo_copy(
        &format!("docker://{}/up/cache/img0:v1", protected.addr),
        &format!("oci:{}:v1", tmp.path().join("protected").display()),
        false,
    );
    let report = support::admin::gc_pass(&protected.url);
    assert_eq!(report["cache_images_evicted"], 0, "{report}");
    drop(upstream);
    let layer0 = &images[0].layers[0].blob.digest;
    let (status, _) = http_get(&format!("{}/v2/up/cache/img0/blobs/{layer0}", protected.url));
    assert_eq!(status, 200, "a protected image is served from the cache");
    for (i, image) in images.iter().enumerate() {
        let layer = &image.layers[0].blob.digest;
        let (status, body) = http_get(&format!("{}/v2/up/cache/img{i}/blobs/{layer}", mirror.url));
        if i == 1 {
            assert_ne!(status, 200, "img1 was evicted, and its upstream is gone");
        } else {
            assert_eq!(status, 200, "img{i} stays cached: {}", String::from_utf8_lossy(&body));
            assert_eq!(sha256_digest(&body), *layer);
        }
    }
    // Within its bound now: another pass evicts nothing.
    let report = support::admin::gc_pass(&mirror.url);
    assert_eq!(report["cache_images_evicted"], 0, "{report}");
}
