//! berth over TLS (`--tls-cert`/`--tls-key`), with a CA of the test's own:
//! HTTP/2 and HTTP/1.1, file bodies (copied through TLS instead of sendfile),
//! a certificate rotation during a pull, SIGHUP, and the real clients:
//! skopeo and podman with `--cert-dir`, the docker engine with
//! `/etc/docker/certs.d/<host>:<port>/ca.crt` and a host name mapped to
//! 127.0.0.1; client certificates naming users of the access policy.
//! Fails (never skips) when a client is missing.

mod conformance_common;
mod support;

use conformance_common::{data, Client};
use reqwest::StatusCode;
use sha2::Digest as _;
use std::path::Path;
use std::time::{Duration, Instant};
use support::images::{unique, Image, OciLayout};
use support::tls::TestCa;
use support::tools::{skopeo, tool, Output};

/// The names the server certificates are for.
const NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A reqwest client trusting only `ca`.
fn https_client(ca: &TestCa, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none());
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn tls_args<'a>(cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    vec!["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]
}

/// HTTPS with HTTP/2 (ALPN) and HTTP/1.1, TLS 1.2 too; pushes and pulls of
/// blobs large enough to be file bodies; plain HTTP gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn https_with_http2_and_http1_serves_file_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth test CA");
    let (cert, key) = ca.server(&NAMES).write(dir.path(), "server");
    let mut args = vec!["--no-self-image"];
    args.extend(tls_args(&cert, &key));
    let server = support::TestServer::start_with(&args);
    let base = format!("https://localhost:{}", server.addr.port());
    let blob = data(42, 5 << 20);
    let digest = {
        let c = Client {
            base: base.clone(),
            http: https_client(&ca, false),
        };
        c.push_blob("tls/files", &blob).await
    };
    for http1 in [false, true] {
        let http = https_client(&ca, http1);
        let r = http.get(format!("{base}/v2/")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let version = r.version();
        assert_eq!(
            version,
            if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            }
        );
        let r = http
            .get(format!("{base}/v2/tls/files/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap();
        assert!(body[..] == blob[..], "{version:?}: the blob came back different");
        let r = http
            .get(format!("{base}/v2/tls/files/blobs/{digest}"))
            .header("range", "bytes=1000000-3999999")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert!(r.bytes().await.unwrap()[..] == blob[1_000_000..4_000_000]);
    }
    // TLS 1.2 only, as older clients speak.
    let http12 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(http12.get(format!("{base}/v2/")).send().await.unwrap().status(), 200);
    // Another CA's client does not trust it; plain HTTP gets no answer.
    let stranger = TestCa::new("someone else");
    assert!(https_client(&stranger, false)
        .get(format!("{base}/v2/"))
        .send()
        .await
        .is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/v2/", server.addr.port()))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
}

/// `GET /v2/` with a client that trusts only `ca` succeeds.
async fn trusted_by(ca: &TestCa, base: &str) -> bool {
    https_client(ca, true)
        .get(format!("{base}/v2/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok()
}

/// A certificate rotated while a blob is being pulled: the pull finishes on
/// its connection with the old certificate, new connections get the new one,
/// and berth is not restarted.
#[tokio::test(flavor = "multi_thread")]
async fn certificate_rotation_during_a_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (cert, key) = old_ca.server(&NAMES).write(dir.path(), "server");
    let mut args = vec!["--no-self-image", "--tls-reload-interval", "200ms"];
    args.extend(tls_args(&cert, &key));
    let server = support::TestServer::start_with(&args);
    let base = format!("https://localhost:{}", server.addr.port());
    let old = Client {
        base: base.clone(),
        http: https_client(&old_ca, true),
    };
    let blob = data(7, 48 << 20);
    let digest = old.push_blob("tls/rotate", &blob).await;

    let mut pull = old
        .http
        .get(format!("{base}/v2/tls/rotate/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(pull.status(), StatusCode::OK);
    let mut hasher = sha2::Sha256::new();
    let mut got = 0usize;
    // Part of it, slowly.
    while got < 4 << 20 {
        let chunk = pull.chunk().await.unwrap().expect("more of the blob");
        hasher.update(&chunk);
        got += chunk.len();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    ca_rotates_to(&new_ca, dir.path());
    let start = Instant::now();
    while !trusted_by(&new_ca, &base).await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !trusted_by(&old_ca, &base).await,
        "new connections still get the old certificate"
    );

    while let Some(chunk) = pull.chunk().await.unwrap() {
        hasher.update(&chunk);
        got += chunk.len();
    }
    assert_eq!(got, blob.len());
    assert_eq!(format!("sha256:{}", hex::encode(hasher.finalize())), digest);
}

/// Replaces the server certificate in `dir` with one from `ca`.
fn ca_rotates_to(ca: &TestCa, dir: &Path) {
    ca.server(&NAMES).write(dir, "server");
}

/// SIGHUP reloads the files at once (here the file poll is an hour away).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (cert, key) = old_ca.server(&NAMES).write(dir.path(), "server");
    let mut args = vec!["--no-self-image", "--tls-reload-interval", "1h"];
    args.extend(tls_args(&cert, &key));
    let berth = support::BerthProcess::spawn(data_dir.path(), &args);
    let base = format!("https://localhost:{}", berth.addr.port());
    assert!(trusted_by(&old_ca, &base).await);
    ca_rotates_to(&new_ca, dir.path());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(trusted_by(&old_ca, &base).await, "reloaded without being asked");
    // SAFETY: sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(berth.child.id() as i32, libc::SIGHUP) }, 0);
    let start = Instant::now();
    while !trusted_by(&new_ca, &base).await {
        assert!(start.elapsed() < Duration::from_secs(5), "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A directory with `ca.crt`, as `--cert-dir` and certs.d expect it.
fn cert_dir(ca: &TestCa) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    ca.write(d.path(), "ca.crt");
    d
}

fn push_test_image(marker: &str) -> (Image, tempfile::TempDir, OciLayout) {
    let image = Image::runnable(marker);
    let src = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(src.path());
    layout.add_image("one", &image);
    (image, src, layout)
}

/// skopeo and podman verify berth's certificate with `--cert-dir`, and
/// refuse it without.
#[test]
fn skopeo_and_podman_with_cert_dir() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth test CA");
    let (cert, key) = ca.server(&NAMES).write(dir.path(), "server");
    let mut args = vec!["--no-self-image"];
    args.extend(tls_args(&cert, &key));
    let server = support::TestServer::start_with(&args);
    let certs = cert_dir(&ca);
    let certs = certs.path().to_str().unwrap();
    let (image, _src, layout) = push_test_image(&unique("tls-skopeo"));
    let remote = format!("docker://localhost:{}/tls/skopeo:v1", server.addr.port());

    let refused = skopeo(["copy"]).arg(layout.reference("one")).arg(&remote).fails();
    assert!(
        refused.stderr.contains("certificate") || refused.stderr.contains("x509"),
        "{}",
        refused.describe()
    );
    skopeo(["copy", "--dest-cert-dir", certs])
        .arg(layout.reference("one"))
        .arg(&remote)
        .ok();
    let raw = skopeo(["inspect", "--raw", "--cert-dir", certs]).arg(&remote).ok();
    assert_eq!(
        support::images::sha256_digest(raw.stdout.as_bytes()),
        image.manifest.digest
    );

    let state = tempfile::tempdir().unwrap();
    let d = |sub: &str| state.path().join(sub).display().to_string();
    let podman = || {
        tool("podman")
            .args(["--root", &d("root"), "--runroot", &d("run"), "--tmpdir", &d("tmp")])
            .args([
                "--storage-driver=vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
            ])
    };
    let reference = remote.trim_start_matches("docker://").to_owned();
    podman().args(["pull", "--cert-dir", certs, reference.as_str()]).ok();
    let out = podman()
        .args(["image", "inspect", "--format", "{{.Digest}}", reference.as_str()])
        .ok();
    assert_eq!(out.stdout.trim(), image.manifest.digest);
}

/// An entry in /etc/hosts and a CA in /etc/docker/certs.d, removed on drop.
struct DockerTrust {
    line: String,
    certs: std::path::PathBuf,
}

impl DockerTrust {
    fn install(host: &str, port: u16, ca: &TestCa) -> DockerTrust {
        let line = format!("127.0.0.1 {host} # berth tls test");
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        std::fs::write("/etc/hosts", format!("{}\n{line}\n", hosts.trim_end())).unwrap();
        let certs = Path::new("/etc/docker/certs.d").join(format!("{host}:{port}"));
        std::fs::create_dir_all(&certs).unwrap();
        ca.write(&certs, "ca.crt");
        DockerTrust { line, certs }
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.certs);
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: Vec<&str> = hosts.lines().filter(|l| *l != self.line).collect();
            let _ = std::fs::write("/etc/hosts", format!("{}\n", kept.join("\n")));
        }
    }
}

fn docker<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Output {
    tool("docker").args(args).run()
}

/// The docker engine pushes and pulls over TLS, trusting berth's CA through
/// `/etc/docker/certs.d/<host>:<port>/ca.crt`, the registry named by a host
/// name mapped to 127.0.0.1. (The engine treats registries on 127.0.0.0/8 as
/// insecure and skips verification for them, so this shows TLS and the
/// certs.d setup working, not the verification; skopeo and podman above show
/// that.) berth serves only TLS on the port, so nothing went over plain HTTP.
#[test]
fn docker_push_and_pull_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth test CA");
    let host = "berth-tls.test";
    let (cert, key) = ca.server(&[host, "localhost"]).write(dir.path(), "server");
    let mut args = vec!["--no-self-image"];
    args.extend(tls_args(&cert, &key));
    let server = support::TestServer::start_with(&args);
    let _trust = DockerTrust::install(host, server.addr.port(), &ca);
    let marker = unique("tls-docker");
    let (_image, _src, layout) = push_test_image(&marker);
    let local = format!("tls-local/{marker}:src");
    let remote = format!("{host}:{}/tls/docker:v1", server.addr.port());
    let cleanup = [local.clone(), remote.clone()];
    let result = std::panic::catch_unwind(|| {
        support::tools::skopeo_copy(&layout.reference("one"), &format!("docker-daemon:{local}"), false);
        let ok = |o: Output| {
            assert!(o.success(), "{}", o.describe());
            o
        };
        ok(docker(["tag", local.as_str(), remote.as_str()]));
        let push = ok(docker(["push", remote.as_str()]));
        // `v1: digest: sha256:... size: N` (the engine may have converted the
        // manifest, so its digest is the engine's, not the layout's).
        let digest = push
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in {}", push.describe()))
            .to_owned();
        ok(docker(["rmi", local.as_str(), remote.as_str()]));
        let pull = ok(docker(["pull", remote.as_str()]));
        assert!(
            pull.stdout.contains(&format!("Digest: {digest}")),
            "{}",
            pull.describe()
        );
        assert!(pull.stdout.contains("Pull complete"), "{}", pull.describe());
        let out = ok(docker(["run", "--rm", "--network=host", remote.as_str()]));
        assert_eq!(out.stdout.trim(), marker);
    });
    for r in &cleanup {
        let _ = docker(["rmi", "-f", r.as_str()]);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// With `--tls-client-ca`, a client certificate's common name is the user
/// the access policy (here `[auth]` in the config file) decides for: skopeo
/// pushes with carol's certificate, mallory's is denied, no certificate is
/// anonymous; the admin API is for the policy's admins.
#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_identify_users() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("berth test CA");
    let (cert, key) = ca.server(&NAMES).write(dir.path(), "server");
    let client_ca = ca.write(dir.path(), "clients.pem");
    let config = support::write_config(
        dir.path(),
        &format!(
            r#"
tls-cert = "{}"
tls-key = "{}"
tls-client-ca = "{}"

[auth]
default = []
admins = ["root"]

[[auth.access]]
repository = "team/**"
users = {{ carol = ["pull", "push"] }}
"#,
            cert.display(),
            key.display(),
            client_ca.display()
        ),
    );
    let data = dir.path().join("data");
    let server = support::BerthProcess::spawn(&data, &["--no-self-image", "--config", config.to_str().unwrap()]);
    let port = server.addr.port();

    // A --cert-dir with the CA and, optionally, a client certificate
    // (containers/image takes `<name>.cert` with `<name>.key`).
    let cert_dir_for = |user: Option<&str>| {
        let d = cert_dir(&ca);
        if let Some(user) = user {
            let issued = ca.client(user, "berth tests");
            std::fs::write(d.path().join(format!("{user}.cert")), &issued.cert_pem).unwrap();
            std::fs::write(d.path().join(format!("{user}.key")), &issued.key_pem).unwrap();
        }
        d
    };
    let (image, _src, layout) = push_test_image(&unique("tls-client-cert"));
    let remote = format!("docker://localhost:{port}/team/app:v1");
    let push = |user: Option<&str>| {
        let certs = cert_dir_for(user);
        skopeo(["copy", "--dest-cert-dir", certs.path().to_str().unwrap()])
            .arg(layout.reference("one"))
            .arg(&remote)
            .run()
    };
    let out = push(Some("carol"));
    assert!(out.success(), "{}", out.describe());
    let denied = push(Some("mallory"));
    assert!(!denied.success(), "{}", denied.describe());
    // skopeo first HEADs the blob: a 403 without a body to quote.
    assert!(
        denied.stderr.contains("denied") || denied.stderr.contains("403"),
        "{}",
        denied.describe()
    );
    let anonymous = push(None);
    assert!(!anonymous.success(), "{}", anonymous.describe());

    let certs = cert_dir_for(Some("carol"));
    let raw = skopeo(["inspect", "--raw", "--cert-dir", certs.path().to_str().unwrap()])
        .arg(&remote)
        .ok();
    assert_eq!(
        support::images::sha256_digest(raw.stdout.as_bytes()),
        image.manifest.digest
    );

    // Each decision is in the log line, under the certificate's name.
    let line = server
        .wait_for_log(Duration::from_secs(5), |l| {
            l["method"] == "PUT"
                && l["path"].as_str().is_some_and(|p| p.contains("/manifests/"))
                && l["user"] == "carol"
        })
        .expect("a log line for carol's manifest PUT");
    assert!(line["access"].as_str().unwrap().starts_with("allowed"), "{line}");

    let client = |user: Option<&str>| {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
        if let Some(user) = user {
            let issued = ca.client(user, "berth tests");
            b = b.identity(reqwest::Identity::from_pem(issued.identity_pem().as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let gc = format!("https://localhost:{port}/berth/v1/gc");
    for (user, status) in [(Some("root"), 200), (Some("carol"), 403), (None, 401)] {
        let r = client(user).get(&gc).send().await.unwrap();
        assert_eq!(r.status(), status, "GET /berth/v1/gc as {user:?}");
    }
}
