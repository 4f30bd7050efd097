//! Clients that try to stall, exhaust or fool the server, each from a finding
//! of a hostile-client probe (issue 10, "Hostile clients"): manifests nested
//! too deep, manifests whose Content-Type lies, descriptors whose sizes lie.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Pushes a config and one layer to `repo`; returns their bytes.
async fn push_blobs(c: &Client, repo: &str, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = data(seed, 8_213);
    c.push_blob(repo, &config).await;
    c.push_blob(repo, &layer).await;
    (config, layer)
}

fn manifest_value(config: &[u8], layer: &[u8]) -> Value {
    serde_json::from_slice(&image_manifest(config, &[layer])).unwrap()
}

/// Sends `body` as a manifest with `content_type` (none when `None`).
async fn put_raw(
    c: &Client,
    repo: &str,
    reference: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = c.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"));
    if let Some(t) = content_type {
        req = req.header("content-type", t);
    }
    req.body(body).send().await.unwrap()
}

/// A 100,000-deep array in a field berth does not know (200 KB) was accepted
/// and served; now any nesting deeper than 64 is MANIFEST_INVALID.
#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_manifests_are_refused() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "hostile/deep";
    let (config, layer) = push_blobs(&c, repo, 1).await;
    let base = serde_json::to_string(&manifest_value(&config, &layer)).unwrap();
    let with_unknown = |depth: usize| {
        base.replacen(
            '{',
            &format!(r#"{{"x-unknown":{}{},"#, "[".repeat(depth), "]".repeat(depth)),
            1,
        )
    };
    let deep = with_unknown(100_000);
    assert!(deep.len() > 200_000);
    let r = c.put_manifest(repo, "deep", OCI_MANIFEST, deep.as_bytes()).await;
    let body = assert_error(r, 400, "MANIFEST_INVALID").await;
    assert!(body.to_string().contains("deeper than 64"), "{body}");
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/deep")).await.status(), 404);
    assert_eq!(
        c.get(&format!("/v2/{repo}/manifests/{}", sha256(deep.as_bytes())))
            .await
            .status(),
        404
    );

    // Just past the limit (the document itself is the first level).
    let r = c
        .put_manifest(repo, "deep", OCI_MANIFEST, with_unknown(64).as_bytes())
        .await;
    assert_error(r, 400, "MANIFEST_INVALID").await;
    // Nesting that real manifests could have is fine.
    let r = c
        .put_manifest(repo, "shallow", OCI_MANIFEST, with_unknown(63).as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
}

/// An OCI manifest sent as text/plain, application/json or without a
/// Content-Type was accepted and then served as OCI: the declared type and
/// the document's mediaType must agree.
#[tokio::test(flavor = "multi_thread")]
async fn content_type_must_match_the_manifest() {
    let s = server();
    let c = Client::new(&s.url);
    let repo = "hostile/ctype";
    let (config, layer) = push_blobs(&c, repo, 2).await;
    let m = serde_json::to_vec(&manifest_value(&config, &layer)).unwrap();
    for (tag, ct) in [
        ("plain", Some("text/plain")),
        ("json", Some("application/json")),
        ("none", None),
        ("docker", Some(DOCKER_MANIFEST)),
        ("index", Some(OCI_INDEX)),
    ] {
        let r = put_raw(&c, repo, tag, ct, m.clone()).await;
        let body = assert_error(r, 400, "MANIFEST_INVALID").await;
        assert!(body.to_string().contains("Content-Type"), "{ct:?}: {body}");
        assert_eq!(
            c.get(&format!("/v2/{repo}/manifests/{tag}")).await.status(),
            404,
            "{ct:?}"
        );
    }
    // Media type parameters and case do not matter (some clients send them).
    for (tag, ct) in [
        ("params", format!("{OCI_MANIFEST}; charset=utf-8")),
        ("upper", OCI_MANIFEST.to_uppercase()),
    ] {
        let r = put_raw(&c, repo, tag, Some(&ct), m.clone()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{ct}: {}", text(r).await);
        let r = c.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
    }

    // A document without mediaType: the Content-Type names its type, and must.
    let mut bare = manifest_value(&config, &layer);
    bare.as_object_mut().unwrap().remove("mediaType");
    let bare = serde_json::to_vec(&bare).unwrap();
    for ct in [None, Some("application/json"), Some(DOCKER_MANIFEST), Some(OCI_INDEX)] {
        let r = put_raw(&c, repo, "bare", ct, bare.clone()).await;
        assert_error(r, 400, "MANIFEST_INVALID").await;
    }
    let r = put_raw(&c, repo, "bare", Some(OCI_MANIFEST), bare.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
    let r = c.get(&format!("/v2/{repo}/manifests/bare")).await;
    assert_eq!(header(&r, "content-type"), Some(OCI_MANIFEST));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &bare[..]);
}

/// A layer descriptor with size 2^63, 2^64-1 or 1 for an 8,213-byte blob was
/// accepted (clients then fail the pull): every descriptor's size must be its
/// content's, and the error names the descriptor.
#[tokio::test(flavor = "multi_thread")]
async fn descriptor_sizes_must_be_true() {
    let data = tempfile::tempdir().unwrap();
    let s = server_with(&["--data", data.path().to_str().unwrap()]);
    let c = Client::new(&s.url);
    let repo = "hostile/sizes";
    let (config, layer) = push_blobs(&c, repo, 3).await;
    assert_eq!(layer.len(), 8_213);
    let good = manifest_value(&config, &layer);
    for (field, size) in [
        ("layers", json!(1u64 << 63)),
        ("layers", json!(u64::MAX)),
        ("layers", json!(1)),
        ("layers", json!(8_212)),
        ("layers", json!(8_214)),
        ("layers", json!(0)),
        ("config", json!(config.len() + 1)),
    ] {
        let mut m = good.clone();
        let (digest, slot) = match field {
            "layers" => (sha256(&layer), &mut m["layers"][0]["size"]),
            _ => (sha256(&config), &mut m["config"]["size"]),
        };
        *slot = size.clone();
        let body = serde_json::to_vec(&m).unwrap();
        let r = c.put_manifest(repo, "lies", OCI_MANIFEST, &body).await;
        let err = assert_error(r, 400, "MANIFEST_INVALID").await;
        let detail = &err["errors"][0]["detail"];
        assert_eq!(detail["digest"], json!(digest), "{field} {size}: {err}");
        assert_eq!(detail["size"], size, "{err}");
        assert_eq!(c.get(&format!("/v2/{repo}/manifests/lies")).await.status(), 404);
    }
    // Past u64 is not a size at all.
    let body = serde_json::to_string(&good)
        .unwrap()
        .replace(r#""size":8213"#, r#""size":18446744073709551616"#);
    let r = c.put_manifest(repo, "lies", OCI_MANIFEST, body.as_bytes()).await;
    assert_error(r, 400, "MANIFEST_INVALID").await;

    let image = serde_json::to_vec(&good).unwrap();
    let r = c.put_manifest(repo, "v1", OCI_MANIFEST, &image).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);

    // An index's children: the size of the child manifest.
    // The child's size comes from the manifest cache once it has been read,
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/v1")).await.status(), 200);
    index_sizes_must_be_true(&c, repo, &image).await;
    // and from a stat of its bytes where nothing is cached (the next server on the same data).
    s.stop();
    let s2 = server_with(&["--data", data.path().to_str().unwrap()]);
    index_sizes_must_be_true(&Client::new(&s2.url), repo, &image).await;
}

/// Pushes indexes over the manifest `image` with wrong sizes (refused, naming
/// the child) and the right one.
async fn index_sizes_must_be_true(c: &Client, repo: &str, image: &[u8]) {
    let index = |size: u64| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(image), "size": size}],
        }))
        .unwrap()
    };
    for bad in [1, image.len() as u64 - 1, 1 << 63, u64::MAX] {
        let r = c.put_manifest(repo, "idx", OCI_INDEX, &index(bad)).await;
        let err = assert_error(r, 400, "MANIFEST_INVALID").await;
        assert_eq!(err["errors"][0]["detail"]["digest"], json!(sha256(image)), "{err}");
    }
    let r = c.put_manifest(repo, "idx", OCI_INDEX, &index(image.len() as u64)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r).await);
}

/// After a kill -9 in the middle of a tag write, tags/list listed a tag that
/// did not resolve (its directory held only `index/.../.tmp-*`), and the
/// temporary file stayed forever. Now only resolving tags are listed, and the
/// start sweeps temporary files old enough that no live write holds them:
/// those in berth's temp directory every time, those an older berth wrote
/// beside their targets once per data directory.
#[tokio::test(flavor = "multi_thread")]
async fn interrupted_tag_writes_are_not_listed_and_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let repo = "hostile/tags";
    let s = server_with(&["--data", data]);
    let c = Client::new(&s.url);
    let (_, digest) = c.push_image(repo, "good", 4).await;
    let tags = dir
        .path()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    let hex = digest.strip_prefix("sha256:").unwrap();
    // What the crash leaves: the tag's index link half written, no current/link.
    let broken = tags.join("broken/index/sha256").join(hex);
    std::fs::create_dir_all(&broken).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let debris = broken.join(".tmp-0123456789abcdef");
    std::fs::write(&debris, &digest).unwrap();
    std::fs::File::open(&debris).unwrap().set_modified(old).unwrap();
    // The same, written a moment ago: it may be a live write's, and stays.
    let young = tags.join("young/current");
    std::fs::create_dir_all(&young).unwrap();
    std::fs::write(young.join(".tmp-fedcba9876543210"), &digest).unwrap();

    let listed = |c: Client| async move {
        let r = c.get(&format!("/v2/{repo}/tags/list")).await;
        assert_eq!(r.status(), StatusCode::OK);
        json_body(r).await["tags"].clone()
    };
    assert_eq!(listed(Client::new(&s.url)).await, json!(["good"]));
    assert_eq!(c.get(&format!("/v2/{repo}/manifests/broken")).await.status(), 404);
    drop(s);
    // The first start found no debris beside targets and marked the walk
    // done; a data directory an older berth wrote has no such mark.
    let walked = dir.path().join("berth/v1/scattered-temp-swept");
    assert!(support::wait_until(std::time::Duration::from_secs(10), || walked.exists()));
    std::fs::remove_file(&walked).unwrap();
    // What a crash of this berth leaves: a file in its temp directory.
    let temp = dir.path().join("berth/v1/tmp");
    let crashed = temp.join(".tmp-00112233445566778899aabbccddeeff");
    std::fs::write(&crashed, &digest).unwrap();
    std::fs::File::open(&crashed).unwrap().set_modified(old).unwrap();
    let live = temp.join(".tmp-ffeeddccbbaa99887766554433221100");
    std::fs::write(&live, &digest).unwrap();

    let s = server_with(&["--data", data]);
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || !tags.join("broken").exists()),
        "the start did not sweep {}",
        debris.display()
    );
    assert!(young.join(".tmp-fedcba9876543210").exists());
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || !crashed.exists()),
        "the start did not sweep {}",
        crashed.display()
    );
    assert!(live.exists());
    assert_eq!(listed(Client::new(&s.url)).await, json!(["good"]));
    // The tag can be written again as usual.
    let (_, digest2) = Client::new(&s.url).push_image(repo, "broken", 5).await;
    assert_eq!(listed(Client::new(&s.url)).await, json!(["broken", "good"]));
    let r = Client::new(&s.url).get(&format!("/v2/{repo}/manifests/broken")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(digest2.as_str()));
}

// ---- Connections that stall or pile up -------------------------------------

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Short limits, so that the tests take seconds: header 1 s, idle 2 s, body 2 s.
const SHORT_LIMITS: [&str; 6] = ["--header-timeout", "1s", "--idle-timeout", "2s", "--body-timeout", "2s"];

fn connect(server: &support::TestServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the server closes `s`; returns how long that took from `since`,
/// or `None` if it is still open at `since + within`. Response bytes are skipped.
fn closed_after(s: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let left = (since + within).checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            // Reset: closed with unread data, which is closed too.
            Err(_) => return Some(since.elapsed()),
        }
    }
}

/// `GET /v2/` on a new connection answers within `within`.
fn base_answers(addr: std::net::SocketAddr, within: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, within) else {
        return false;
    };
    s.set_read_timeout(Some(within)).unwrap();
    if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// A connection that sends nothing, one that sends a request line and headers
/// without the final blank line, and one that trickles a header byte every
/// 200 ms were all open after 75 s; now they go after the header timeout.
#[test]
fn stalled_request_heads_are_closed() {
    let server = support::tools::berth(&SHORT_LIMITS);
    let start = Instant::now();
    let mut silent = connect(&server);
    let mut partial = connect(&server);
    partial
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\n")
        .unwrap();
    let mut trickle = connect(&server);
    let trickler = std::thread::spawn({
        let mut s = trickle.try_clone().unwrap();
        move || {
            let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\n");
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"X").is_err() {
                    return;
                }
            }
        }
    });
    for (what, s) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("trickle", &mut trickle),
    ] {
        let t = closed_after(s, start, Duration::from_secs(5)).unwrap_or_else(|| panic!("{what} still open after 5 s"));
        assert!(
            t >= Duration::from_millis(900),
            "{what} closed after {t:?}, before the header timeout"
        );
    }
    trickler.join().unwrap();
    assert!(base_answers(server.addr, Duration::from_secs(2)));
}

/// An idle keep-alive connection was open after 75 s; now it goes after the
/// idle timeout, and not before.
#[test]
fn idle_keep_alive_is_closed() {
    let server = support::tools::berth(&SHORT_LIMITS);
    let mut s = connect(&server);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let idle = Instant::now();
    let t = closed_after(&mut s, idle, Duration::from_secs(5)).expect("keep-alive still open after 5 s");
    // The idle limit (2 s), not the header limit (1 s), applies between requests.
    assert!(t >= Duration::from_millis(1800), "closed after {t:?}");

    // A client that keeps sending requests keeps its connection.
    let mut s = connect(&server);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = [0u8; 512];
        let n = s.read(&mut resp).unwrap();
        assert!(
            resp[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&resp[..n])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// 200 slowloris connections were not closed in 8 s; now they all go with the
/// header timeout, and the server answers others meanwhile.
#[test]
fn slowloris_is_closed() {
    let server = support::tools::berth(&SHORT_LIMITS);
    let start = Instant::now();
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = connect(&server);
            s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Probe: {i}\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    // Keep trickling header lines into every connection while checking.
    let mut open = conns.len();
    while open > 0 && start.elapsed() < Duration::from_secs(6) {
        assert!(
            base_answers(server.addr, Duration::from_secs(2)),
            "the server stopped answering"
        );
        open = 0;
        for s in &mut conns {
            if s.write_all(b"X-More: y\r\n").is_ok() && closed_after(s, Instant::now(), Duration::ZERO).is_none() {
                open += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(open, 0, "slowloris connections still open after {:?}", start.elapsed());
    assert!(start.elapsed() >= Duration::from_millis(900));
}

/// An upload whose body stops is closed after the body timeout; one whose
/// bytes trickle (a slow link) completes.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_bodies_are_closed_and_slow_ones_complete() {
    let server = support::tools::berth(&SHORT_LIMITS);
    let c = Client::new(&server.url);
    let repo = "hostile/body";
    let upload = c.start_upload(repo).await;
    let path = upload.strip_prefix(&server.url).unwrap_or(&upload).to_owned();
    let mut s = connect(&server);
    s.write_all(
        format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    s.write_all(&[7u8; 1000]).unwrap();
    let stalled = Instant::now();
    let t = closed_after(&mut s, stalled, Duration::from_secs(6)).expect("stalled upload still open after 6 s");
    assert!(t >= Duration::from_millis(1800), "closed after {t:?}");

    // 2.5 KB over 5 s, in 100-byte pieces every 200 ms: slower than any
    // limit, but moving.
    let blob = data(9, 2_500);
    let digest = sha256(&blob);
    // A new client: the server's idle timeout closes the first one's pooled
    // connection during the stall, and a request sent on it as it closes
    // fails (IncompleteMessage) before reaching berth.
    let c = Client::new(&server.url);
    let upload = c.start_upload(repo).await;
    let path = upload.strip_prefix(&server.url).unwrap_or(&upload).to_owned();
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut s = connect(&server);
    s.write_all(
        format!(
            "PUT {path}{sep}digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            blob.len()
        )
        .as_bytes(),
    )
    .unwrap();
    for piece in blob.chunks(100) {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(piece).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 201");
    let r = Client::new(&server.url)
        .get(&format!("/v2/{repo}/blobs/{digest}"))
        .await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), &blob[..]);
}

/// A client that stops reading a download is closed after the body timeout
/// (sendfile path), instead of holding its connection and file forever.
#[tokio::test(flavor = "multi_thread")]
async fn downloads_nobody_reads_are_closed() {
    let server = support::tools::berth(&SHORT_LIMITS);
    let c = Client::new(&server.url);
    let repo = "hostile/download";
    let blob = data(10, 32 << 20);
    let digest = c.push_blob(repo, &blob).await;
    let mut s = connect(&server);
    s.write_all(format!("GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Read nothing more: the socket buffers fill, and the server waits.
    std::thread::sleep(Duration::from_secs(4));
    let t = closed_after(&mut s, Instant::now(), Duration::from_secs(10));
    assert!(t.is_some(), "a download nobody reads is still open");
    // A reader that keeps reading gets everything.
    let r = c.get(&format!("/v2/{repo}/blobs/{digest}")).await;
    assert_eq!(r.bytes().await.unwrap().len(), blob.len());
}

/// With more connections than `--max-connections`, those idle the longest
/// are closed to make room; the newest and the busy ones stay.
#[test]
fn the_connection_limit_sheds_the_oldest_idle() {
    let server = support::tools::berth(&["--max-connections", "64", "--header-timeout", "60s"]);
    let mut first: Vec<TcpStream> = (0..64).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut later: Vec<TcpStream> = (0..32).map(|_| connect(&server)).collect();
    assert!(base_answers(server.addr, Duration::from_secs(2)));
    std::thread::sleep(Duration::from_millis(300));
    let closed = |conns: &mut [TcpStream]| {
        conns
            .iter_mut()
            .filter_map(|s| closed_after(s, Instant::now(), Duration::from_millis(1)))
            .count()
    };
    let (old, new) = (closed(&mut first), closed(&mut later));
    assert!(old >= 32, "only {old} of the oldest connections were closed");
    assert_eq!(new, 0, "newer connections were closed before older ones");
}

/// With 1,088 idle connections against a 1,024-descriptor limit, `GET /v2/`
/// got no answer within 2 s. Now accept failures for lack of descriptors close
/// idle connections, and the default connection limit (half the descriptors)
/// keeps them from running out in the first place. Runs the real binary with
/// the limit set.
#[test]
fn descriptor_exhaustion_does_not_stop_the_server() {
    for extra in [&[][..], &["--max-connections", "100000"][..]] {
        let data = tempfile::tempdir().unwrap();
        let mut args = vec!["--no-self-image"];
        args.extend_from_slice(extra);
        let berth = support::BerthProcess::spawn_with(data.path(), &args, |cmd| {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure runs in the child before exec.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: 1024,
                        rlim_max: 1024,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        });
        let idle: Vec<TcpStream> = (0..1088)
            .filter_map(|_| TcpStream::connect_timeout(&berth.addr, Duration::from_secs(2)).ok())
            .collect();
        assert!(idle.len() > 1024, "{extra:?}: only {} connections", idle.len());
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        assert!(
            base_answers(berth.addr, Duration::from_secs(2)),
            "{extra:?}: GET /v2/ got no answer within 2 s"
        );
        eprintln!("{extra:?}: answered in {:?}", start.elapsed());
        drop(idle);
    }
}
