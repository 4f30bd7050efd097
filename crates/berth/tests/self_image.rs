//! berth serves its own executable as an image: deterministic (the same
//! binary gives the same digests on every start), well-formed, read-only, and
//! runnable by the real docker engine, whose berth serves the same image again
//! (three generations, one digest); `berth self-digest` prints that digest, and
//! the SBOM built into the binary hangs on the image as a referrer. Fails
//! (never skips) without docker.

mod support;

use flate2::read::GzDecoder;
use serde_json::Value;
use std::io::Read;
use std::time::{Duration, Instant};
use support::images::{sha256_digest, unique};
use support::tools::tool;
use support::{berth_cli, BerthProcess, TestServer};

const VERSION: &str = env!("CARGO_PKG_VERSION");

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .timeout(Duration::from_secs(600));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap().to_vec();
        Resp { status, headers, body }
    })
}

const ACCEPT: (&str, &str) = (
    "accept",
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json",
);

fn manifest(base: &str, repo: &str, reference: &str) -> (String, Vec<u8>) {
    let r = request(
        "GET",
        &format!("{base}/v2/{repo}/manifests/{reference}"),
        &[ACCEPT],
        vec![],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let digest = r.headers["docker-content-digest"].to_str().unwrap().to_owned();
    assert_eq!(digest, sha256_digest(&r.body), "served digest matches the bytes");
    (digest, r.body)
}

fn blob(base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = request("GET", &format!("{base}/v2/{repo}/blobs/{digest}"), &[], vec![]);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), digest);
    r.body
}

#[test]
fn self_image_is_well_formed_deterministic_and_read_only() {
    let data = tempfile::tempdir().unwrap();
    let data_arg = data.path().display().to_string();
    let a = TestServer::start_with(&["--data", &data_arg]);

    // /v2/ answers while the (large, debug) test executable is still being packaged.
    let t = Instant::now();
    let r = request("GET", &format!("{}/v2/", a.url), &[], vec![]);
    assert_eq!(r.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "/v2/ took {:?}", t.elapsed());
    let r = request("GET", &format!("{}/v2/_catalog", a.url), &[], vec![]);
    let catalog: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["berth"]));
    let r = request("GET", &format!("{}/v2/berth/tags/list", a.url), &[], vec![]);
    let tags: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(tags["tags"], serde_json::json!([VERSION, "latest"]));

    let (digest, bytes) = manifest(&a.url, "berth", "latest");
    assert_eq!(manifest(&a.url, "berth", VERSION).0, digest);
    assert_eq!(manifest(&a.url, "berth", &digest).1, bytes);
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["layers"].as_array().unwrap().len(), 1);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    let config: Value =
        serde_json::from_slice(&blob(&a.url, "berth", m["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["/berth"]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(config["config"]["ExposedPorts"], serde_json::json!({"5000/tcp": {}}));
    assert!(
        config.get("created").is_none(),
        "no wall-clock time in the config: {config}"
    );

    let layer_digest = m["layers"][0]["digest"].as_str().unwrap();
    let layer = blob(&a.url, "berth", layer_digest);
    assert_eq!(layer.len() as u64, m["layers"][0]["size"].as_u64().unwrap());
    let mut tar_bytes = Vec::new();
    GzDecoder::new(&layer[..]).read_to_end(&mut tar_bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256_digest(&tar_bytes));
    let mut archive = tar::Archive::new(&tar_bytes[..]);
    let mut entries = archive.entries().unwrap();
    let mut entry = entries.next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("berth"));
    let h = entry.header().clone();
    assert_eq!(h.mode().unwrap(), 0o755);
    assert_eq!((h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()), (0, 0, 0));
    let mut exe = Vec::new();
    entry.read_to_end(&mut exe).unwrap();
    // In-process, the running executable is this test binary.
    assert!(
        exe == std::fs::read(std::env::current_exe().unwrap()).unwrap(),
        "the layer holds the running executable"
    );
    assert!(entries.next().is_none(), "the layer holds nothing but /berth");

    // Ranges of the layer.
    let r = request(
        "GET",
        &format!("{}/v2/berth/blobs/{layer_digest}", a.url),
        &[("range", "bytes=10-29")],
        vec![],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, layer[10..30]);

    // Read-only: no uploads, no manifests, no deletes.
    let r = request("POST", &format!("{}/v2/berth/blobs/uploads/", a.url), &[], vec![]);
    assert_eq!(r.status, 403);
    let err: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(err["errors"][0]["code"], "DENIED");
    assert!(
        err["errors"][0]["message"].as_str().unwrap().contains("read-only"),
        "{err}"
    );
    let r = request(
        "PUT",
        &format!("{}/v2/berth/manifests/mine", a.url),
        &[("content-type", "application/vnd.oci.image.manifest.v1+json")],
        bytes.clone(),
    );
    assert_eq!(r.status, 403);
    let r = request("DELETE", &format!("{}/v2/berth/manifests/{digest}", a.url), &[], vec![]);
    assert_eq!(r.status, 403);
    a.stop();

    // Another data directory (built from scratch) and the same one again
    // (from the cache) give byte-identical images.
    let b = TestServer::start();
    assert_eq!(manifest(&b.url, "berth", "latest"), (digest.clone(), bytes.clone()));
    b.stop();
    let c = TestServer::start_with(&["--data", &data_arg, "--self-name", "tools/registry"]);
    assert_eq!(manifest(&c.url, "tools/registry", "latest").0, digest);
    let r = request(
        "GET",
        &format!("{}/v2/berth/manifests/latest", c.url),
        &[ACCEPT],
        vec![],
    );
    assert_eq!(r.status, 404);
    c.stop();

    let d = TestServer::start_with(&["--no-self-image"]);
    let r = request("GET", &format!("{}/v2/_catalog", d.url), &[], vec![]);
    let catalog: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!([]));
    let r = request(
        "GET",
        &format!("{}/v2/berth/manifests/latest", d.url),
        &[ACCEPT],
        vec![],
    );
    assert_eq!(r.status, 404);
}

#[test]
fn self_digest_prints_what_berth_serves_and_the_sbom_refers_to_it() {
    let printed = berth_cli(["self-digest"]).ok().stdout;
    let digest = printed.trim();
    assert_eq!(printed, format!("{digest}\n"), "one line");
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{printed}");

    // The same executable, serving.
    let data = tempfile::tempdir().unwrap();
    let server = BerthProcess::spawn(data.path(), &[]);
    let (served, image) = manifest(&server.url, "berth", "latest");
    assert_eq!(served, digest, "berth self-digest is what berth serves");

    let r = request(
        "GET",
        &format!("{}/v2/berth/referrers/{digest}", server.url),
        &[],
        vec![],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/vnd.oci.image.index.v1+json");
    let index: Value = serde_json::from_slice(&r.body).unwrap();
    let referrers = index["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{index}");
    assert_eq!(referrers[0]["artifactType"], "application/vnd.cyclonedx+json");
    let (sbom_digest, sbom_manifest) = manifest(&server.url, "berth", referrers[0]["digest"].as_str().unwrap());
    assert_eq!(referrers[0]["size"], sbom_manifest.len());
    let m: Value = serde_json::from_slice(&sbom_manifest).unwrap();
    assert_eq!(m["subject"]["digest"], digest);
    assert_eq!(m["subject"]["size"], image.len());
    assert_eq!(m["artifactType"], "application/vnd.cyclonedx+json");
    assert!(
        m["annotations"].is_null(),
        "no creation time or other varying annotation: {m}"
    );
    let document = blob(&server.url, "berth", m["layers"][0]["digest"].as_str().unwrap());
    assert_eq!(document, berth_cli(["sbom"]).ok().stdout.into_bytes());
    assert_eq!(
        blob(&server.url, "berth", m["config"]["digest"].as_str().unwrap()),
        b"{}"
    );
    // Only the image has referrers; the SBOM's manifest has none.
    let r = request(
        "GET",
        &format!("{}/v2/berth/referrers/{sbom_digest}", server.url),
        &[],
        vec![],
    );
    let index: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
}

/// Containers and images this test made in the shared engine, removed however it ends.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = tool("docker").args(["rm", "-f", c.as_str()]).run();
        }
        for i in &self.images {
            let _ = tool("docker").args(["rmi", "-f", i.as_str()]).run();
        }
    }
}

/// Reads the address a berth in a container reports in its JSON log.
fn container_addr(container: &str) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let out = tool("docker").args(["logs", container]).ok();
        for line in out.stderr.lines().chain(out.stdout.lines()) {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(addr) = v.get("addr").and_then(|a| a.as_str()) {
                    return addr.to_owned();
                }
            }
        }
        let state = tool("docker")
            .args(["inspect", "--format", "{{.State.Running}}", container])
            .run();
        assert!(
            Instant::now() < end && state.stdout.trim() != "false",
            "the berth in container {container} reported no address: {}",
            out.describe()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `image` (a berth) detached as container `name` on the host network,
/// serving on an ephemeral port with `serve_args`; returns its address.
fn run_self_image(name: &str, image: &str, docker_args: &[&str], serve_args: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name, "--network=host"];
    args.extend_from_slice(docker_args);
    args.extend_from_slice(&[
        image,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--data",
        "/tmp/x",
    ]);
    args.extend_from_slice(serve_args);
    tool("docker").args(args).ok();
    container_addr(name)
}

#[test]
fn docker_runs_the_self_image_for_three_generations_with_one_digest() {
    let data = tempfile::tempdir().unwrap();
    // The real (static) berth executable, packaging itself.
    let a = BerthProcess::spawn(data.path(), &[]);
    let mut cleanup = Cleanup::default();
    let (first, _) = manifest(&a.url, "berth", "latest");
    let mut host = a.addr.to_string();
    let run_id = unique("h3-self");
    for generation in 2..=3 {
        let image = format!("{host}/berth:latest");
        cleanup.images.push(image.clone());
        let pull = tool("docker").args(["pull", image.as_str()]).ok();
        assert!(
            pull.stdout.contains(&first),
            "docker pulled {first}: {}",
            pull.describe()
        );
        let name = format!("{run_id}-gen{generation}");
        cleanup.containers.push(name.clone());
        host = run_self_image(&name, &image, &[], &[]);
        let (digest, _) = manifest(&format!("http://{host}"), "berth", "latest");
        assert_eq!(digest, first, "generation {generation} serves the same image");
        let (v_digest, _) = manifest(&format!("http://{host}"), "berth", VERSION);
        assert_eq!(v_digest, first);
    }
    // And the last generation's image pulls too.
    let last = format!("{host}/berth:{VERSION}");
    cleanup.images.push(last.clone());
    let pull = tool("docker").args(["pull", last.as_str()]).ok();
    assert!(pull.stdout.contains(&first), "{}", pull.describe());
    drop(a);
}

/// The self image, run by docker, mirrors an upstream it finds by host name:
/// the static binary resolves with its own resolver from the container's
/// `/etc/hosts` (glibc's static resolver would need NSS libraries the image
/// does not have).
#[test]
fn the_self_image_mirrors_an_upstream_it_resolves_by_name() {
    let data = tempfile::tempdir().unwrap();
    let a = BerthProcess::spawn(data.path(), &[]);
    let udata = tempfile::tempdir().unwrap();
    let upstream = BerthProcess::spawn(udata.path(), &["--no-self-image"]);
    let marker = unique("h3-self-mirror");
    let layout_dir = tempfile::tempdir().unwrap();
    let mut layout = support::images::OciLayout::create(layout_dir.path());
    let image = support::images::Image::runnable(&marker);
    layout.add_image("v1", &image);
    support::tools::skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/library/app:v1", upstream.addr),
        false,
    );
    let mut cleanup = Cleanup::default();
    let self_image = format!("{}/berth:latest", a.addr);
    cleanup.images.push(self_image.clone());
    tool("docker").args(["pull", self_image.as_str()]).ok();
    let name = unique("h3-self-mirror");
    cleanup.containers.push(name.clone());
    let host_name = "upstream.berth.test";
    let upstream_url = format!("http://{host_name}:{}", upstream.addr.port());
    let mirror = run_self_image(
        &name,
        &self_image,
        &["--add-host", &format!("{host_name}:127.0.0.1")],
        &["--no-self-image", "--upstream", &format!("hub={upstream_url}")],
    );
    let (digest, body) = manifest(&format!("http://{mirror}"), "hub/library/app", "v1");
    assert_eq!(digest, image.manifest.digest, "{}", String::from_utf8_lossy(&body));
    let layer = &image.layers[0].blob;
    assert_eq!(
        blob(&format!("http://{mirror}"), "hub/library/app", &layer.digest),
        layer.bytes
    );
    drop(a);
}
