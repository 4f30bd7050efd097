//! `berth serve --source PREFIX=PATH`: images served read-only, in place, from
//! OCI layout directories, OCI layout tars (skopeo's oci-archive), classic
//! `docker save` tarballs (from the real engine) and newer docker save
//! tarballs (an OCI layout plus manifest.json). The docker engine pulls and
//! runs each. Fails (never skips) without docker or skopeo.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::images::{layout_blob, sha256_digest, unique, Image, Index, OciLayout};
use support::tools::{berth, http_get, skopeo, skopeo_copy, tool};

fn docker<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> support::tools::Tool {
    tool("docker").args(args)
}

/// Images this test made in the shared engine, removed however it ends.
#[derive(Default)]
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = docker(["rmi", "-f", r.as_str()]).run();
        }
    }
}

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), url);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    })
}

fn json_get(url: &str) -> Value {
    let (status, body) = http_get(url);
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Pulls `reference` with docker, runs it and checks it prints `marker`.
fn pull_and_run(reference: &str, marker: &str, cleanup: &mut Cleanup) {
    cleanup.0.push(reference.to_owned());
    docker(["pull", reference]).ok();
    let out = docker(["run", "--rm", "--network=host", reference]).ok();
    assert_eq!(out.stdout.trim(), marker, "{}", out.describe());
}

/// A newer `docker save` archive: an OCI layout whose index names the image the
/// containerd way, plus the classic manifest.json.
fn new_docker_save(dir: &Path, image: &Image, name: &str, tag: &str, out: &Path) {
    let mut layout = OciLayout::create(dir);
    layout.add_image(tag, image);
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest.digest,
            "size": image.manifest.size(),
            "annotations": {
                "io.containerd.image.name": format!("docker.io/library/{name}:{tag}"),
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let hex = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
    let manifest = json!([{
        "Config": hex(&image.config.digest),
        "RepoTags": [format!("{name}:{tag}")],
        "Layers": image.layers.iter().map(|l| hex(&l.blob.digest)).collect::<Vec<_>>(),
    }]);
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    tool("tar")
        .args(["-C", &dir.display().to_string(), "-cf", &out.display().to_string(), "."])
        .ok();
}

#[test]
fn serves_every_archive_format_and_docker_pulls_them() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let mut cleanup = Cleanup::default();

    // Classic docker save, from the real engine.
    let classic_marker = unique("h3-src-classic");
    let classic = Image::runnable(&classic_marker);
    let mut l = OciLayout::create(&tmp.path().join("classic-layout"));
    l.add_image("x", &classic);
    let local = format!("{classic_marker}:v1");
    cleanup.0.push(local.clone());
    skopeo_copy(&l.reference("x"), &format!("docker-daemon:{local}"), false);
    docker(["save", "-o", &p("classic.tar"), &local]).ok();

    // An OCI layout directory, written here: one image and one multi-arch index.
    let layout_marker = unique("h3-src-layout");
    let image = Image::runnable(&layout_marker);
    let multi_marker = unique("h3-src-multi");
    let index = Index::multi_arch(&multi_marker);
    let mut layout = OciLayout::create(&tmp.path().join("layout"));
    layout.add_image("v1", &image);
    layout.add_index("multi", &index);

    // OCI layout tars, written by skopeo.
    skopeo_copy(
        &layout.reference("v1"),
        &format!("oci-archive:{}:app:v1", p("app.tar")),
        false,
    );
    skopeo_copy(
        &layout.reference("multi"),
        &format!("oci-archive:{}:multi", p("multi.tar")),
        true,
    );

    // A newer docker save.
    let new_marker = unique("h3-src-new");
    let new_image = Image::runnable(&new_marker);
    new_docker_save(
        &tmp.path().join("new"),
        &new_image,
        "h3new",
        "1.0",
        &tmp.path().join("new.tar"),
    );

    let sources = [
        format!("classic={}", p("classic.tar")),
        format!("lay={}", p("layout")),
        format!("arc={}", p("app.tar")),
        format!("mul/ti={}", p("multi.tar")),
        format!("new={}", p("new.tar")),
    ];
    let mut args = Vec::new();
    for s in &sources {
        args.push("--source");
        args.push(s.as_str());
    }
    let server = berth(&args);
    let url = &server.url;
    let host = server.host();

    let catalog = json_get(&format!("{url}/v2/_catalog"));
    let classic_repo = format!("classic/{classic_marker}");
    let expected = {
        let mut v = vec![
            classic_repo.clone(),
            "lay".to_owned(),
            "arc/app".to_owned(),
            "mul/ti".to_owned(),
            "new/h3new".to_owned(),
        ];
        v.sort();
        v
    };
    assert_eq!(catalog["repositories"], json!(expected));
    assert_eq!(
        json_get(&format!("{url}/v2/lay/tags/list"))["tags"],
        json!(["multi", "v1"])
    );
    assert_eq!(
        json_get(&format!("{url}/v2/new/h3new/tags/list"))["tags"],
        json!(["1.0"])
    );

    // Served as stored: the digests of the layout's own manifests.
    let digest_of = |repo: &str, reference: &str| {
        let (status, body) = http_get(&format!("{url}/v2/{repo}/manifests/{reference}"));
        assert_eq!(status, 200, "{repo}:{reference}: {}", String::from_utf8_lossy(&body));
        sha256_digest(&body)
    };
    assert_eq!(digest_of("lay", "v1"), image.manifest.digest);
    assert_eq!(digest_of("lay", "multi"), index.index.digest);
    assert_eq!(
        digest_of("lay", &index.image("arm64").manifest.digest),
        index.image("arm64").manifest.digest
    );
    assert_eq!(digest_of("mul/ti", "multi"), index.index.digest);
    assert_eq!(digest_of("arc/app", "v1"), image.manifest.digest);
    assert_eq!(digest_of("new/h3new", "1.0"), new_image.manifest.digest);

    // Classic docker save: a synthesized docker schema 2 manifest.
    let (status, body) = http_get(&format!("{url}/v2/{classic_repo}/manifests/v1"));
    assert_eq!(status, 200);
    let m: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(m["layers"][0]["digest"], classic.layers[0].diff_id.as_str());

    // Blobs come out of the tar in place, ranges included.
    let layer = &image.layers[0].blob;
    let blob_url = format!("{url}/v2/arc/app/blobs/{}", layer.digest);
    let (status, body) = request("GET", &blob_url, &[]);
    assert_eq!(status, 200);
    assert_eq!(body, layout_blob(&layout.dir, &layer.digest));
    let (status, part) = request("GET", &blob_url, &[("range", "bytes=100-199")]);
    assert_eq!(status, 206);
    assert_eq!(part, body[100..200]);
    // Blobs are readable only from the repositories whose images use them.
    let (status, _) = request("GET", &format!("{url}/v2/new/h3new/blobs/{}", layer.digest), &[]);
    assert_eq!(status, 404);

    // docker pulls and runs every format.
    pull_and_run(&format!("{host}/{classic_repo}:v1"), &classic_marker, &mut cleanup);
    pull_and_run(&format!("{host}/lay:v1"), &layout_marker, &mut cleanup);
    pull_and_run(&format!("{host}/arc/app:v1"), &layout_marker, &mut cleanup);
    pull_and_run(
        &format!("{host}/mul/ti:multi"),
        &format!("{multi_marker}-amd64"),
        &mut cleanup,
    );
    pull_and_run(&format!("{host}/new/h3new:1.0"), &new_marker, &mut cleanup);
    // skopeo copies a whole index out.
    let out = tmp.path().join("copied");
    skopeo_copy(
        &format!("docker://{host}/lay:multi"),
        &format!("oci:{}:m", out.display()),
        true,
    );

    // Sources are read-only.
    for repo in ["lay", "arc/app", "arc/other", &classic_repo] {
        let (status, body) = request("POST", &format!("{url}/v2/{repo}/blobs/uploads/"), &[]);
        assert_eq!(status, 403, "{repo}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "DENIED");
    }
    let pushed = format!("{host}/lay:pushed");
    cleanup.0.push(pushed.clone());
    docker(["tag", &format!("{host}/lay:v1"), &pushed]).ok();
    let out = docker(["push", &pushed]).fails();
    assert!(out.stderr.contains("denied"), "{}", out.describe());
}

/// `berth serve` as a child process whose log lines are kept.
struct Logged {
    child: Child,
    url: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Logged {
    fn spawn(data: &Path, extra: &[String]) -> Logged {
        let mut child = std::process::Command::new(support::berth_exe())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--no-self-image",
                "--data",
            ])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let keep = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Some(a) = v.get("addr").and_then(|a| a.as_str()) {
                        let _ = tx.send(a.to_owned());
                    }
                }
                keep.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("berth reported its address");
        Logged {
            child,
            url: format!("http://{addr}"),
            lines,
        }
    }

    /// Waits for a log line containing all of `needles`.
    fn expect_line(&self, needles: &[&str]) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "no log line with {needles:?}:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn broken_archives_are_reported_at_start_and_the_rest_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).display().to_string();
    let image = Image::runnable(&unique("h3-src-broken"));
    let mut layout = OciLayout::create(&tmp.path().join("layout"));
    layout.add_image("v1", &image);
    skopeo_copy(
        &layout.reference("v1"),
        &format!("oci-archive:{}:v1", p("good.tar")),
        false,
    );
    let good = std::fs::read(p("good.tar")).unwrap();

    // Truncated in the middle of the layer.
    std::fs::write(p("truncated.tar"), &good[..good.len() / 2]).unwrap();
    // Same size, one byte of the layer flipped: only hashing can tell.
    let layer = &image.layers[0].blob.bytes;
    let at = good
        .windows(64)
        .position(|w| w == &layer[..64])
        .expect("the layer is stored uncompressed in the tar");
    let mut corrupt = good.clone();
    corrupt[at + layer.len() / 2] ^= 0x55;
    std::fs::write(p("corrupt.tar"), &corrupt).unwrap();
    std::fs::write(p("garbage.tar"), vec![0x42u8; 4096]).unwrap();
    tool("sh")
        .args(["-c", &format!("gzip -c {} > {}", p("good.tar"), p("good.tar.gz"))])
        .ok();

    let args: Vec<String> = [
        ("good", p("good.tar")),
        ("trunc", p("truncated.tar")),
        ("corrupt", p("corrupt.tar")),
        ("garbage", p("garbage.tar")),
        ("gz", p("good.tar.gz")),
    ]
    .iter()
    .flat_map(|(prefix, path)| ["--source".to_owned(), format!("{prefix}={path}")])
    .collect();
    let data = tmp.path().join("data");
    let b = Logged::spawn(&data, &args);

    b.expect_line(&["truncated.tar", "truncated"]);
    b.expect_line(&["garbage.tar", "tar archive"]);
    b.expect_line(&["good.tar.gz", "gzip"]);
    b.expect_line(&["corrupt.tar", "do not match"]);

    let catalog = json_get(&format!("{}/v2/_catalog", b.url));
    assert_eq!(catalog["repositories"], json!(["corrupt", "good"]));
    let blob = |prefix: &str| {
        request(
            "GET",
            &format!("{}/v2/{prefix}/blobs/{}", b.url, image.layers[0].blob.digest),
            &[],
        )
    };
    let (status, body) = blob("good");
    assert_eq!(status, 200);
    assert_eq!(&body, layer);
    // The damaged layer is never served, its manifest and config still are.
    let (status, body) = blob("corrupt");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
    let (status, _) = http_get(&format!("{}/v2/corrupt/manifests/v1", b.url));
    assert_eq!(status, 200);
    let (status, _) = request(
        "GET",
        &format!("{}/v2/corrupt/blobs/{}", b.url, image.config.digest),
        &[],
    );
    assert_eq!(status, 200);

    // A malformed --source is a usage error: berth does not start.
    let out = tool(&support::berth_exe().display().to_string())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-self-image",
            "--data",
            &p("data2"),
            "--source",
            "no-equals-sign",
        ])
        .timeout(Duration::from_secs(30))
        .fails();
    assert!(out.stderr.contains("PREFIX=PATH"), "{}", out.describe());
    // So is a path that is not there (a typo, not a damaged archive).
    let out = tool(&support::berth_exe().display().to_string())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-self-image",
            "--data",
            &p("data3"),
        ])
        .args(["--source", &format!("missing={}", p("no-such.tar"))])
        .timeout(Duration::from_secs(30))
        .fails();
    assert!(
        out.stderr.contains("no-such.tar") && out.stderr.contains("cannot read"),
        "{}",
        out.describe()
    );
    let _ = skopeo(["--version"]).ok();
}
