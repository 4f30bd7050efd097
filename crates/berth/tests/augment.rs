//! Augmented images (layer injection) with real parts: an upstream berth
//! mirrored by a second one, augmentations from the config file (a directory
//! packed by berth) and from the HTTP API (a layer pushed as a blob), the
//! docker engine running the result, and a third berth proving that the same
//! augmentation of the same image has the same digests everywhere.

mod support;

use serde_json::Value;
use support::images::{sha256_digest, unique, Entry, Index, Layer, OciLayout};
use support::tools::{post_blob, skopeo_copy, tool};
use support::{write_config, BerthProcess};

const INDEX_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn berth_process(dir: &std::path::Path, extra: &[&str]) -> BerthProcess {
    let mut args = vec!["--no-self-image"];
    args.extend_from_slice(extra);
    BerthProcess::spawn(dir, &args)
}

/// GETs a manifest; returns its digest header and parsed body.
async fn manifest(client: &reqwest::Client, url: &str) -> (String, Value) {
    let r = client.get(url).header("accept", INDEX_ACCEPT).send().await.unwrap();
    let status = r.status();
    let digest = r
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
    assert_eq!(
        sha256_digest(&body),
        digest,
        "{url}: the body is not what its digest header says"
    );
    (digest, serde_json::from_slice(&body).unwrap())
}

/// GET without an async runtime of its own (these tests run in one).
async fn get(url: &str) -> (u16, Vec<u8>) {
    let r = reqwest::Client::new()
        .get(url)
        .header("accept", INDEX_ACCEPT)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn define(client: &reqwest::Client, base: &str, request: Value) -> (u16, Value) {
    let r = client
        .post(format!("{base}/berth/v1/augmentations"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&request).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, serde_json::from_slice(&r.bytes().await.unwrap()).unwrap())
}

/// The tool layer the HTTP API tests inject: a script and a file.
fn tool_layer(marker: &str) -> Layer {
    Layer::new(&[
        Entry::Dir("opt".into()),
        Entry::File {
            path: "opt/hello.sh".into(),
            data: b"#!/bin/sh\necho \"hello from $GREETING\"\n".to_vec(),
            mode: 0o755,
        },
        Entry::file("opt/marker", format!("{marker}\n")),
    ])
}

/// Checks an augmented index against its base: same platforms (no
/// attestations here), each image with the base's layers plus the injected
/// ones, and returns the digests of the augmented platform manifests.
async fn check_augmented_index(
    client: &reqwest::Client,
    url_base: &str,
    name: &str,
    base: &Index,
    injected: &[String],
) -> Vec<String> {
    let (_, index) = manifest(client, &format!("{url_base}/v2/{name}/manifests/v1")).await;
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), base.images.len());
    let mut digests = Vec::new();
    for (entry, image) in entries.iter().zip(&base.images) {
        assert_eq!(entry["platform"]["architecture"], image.platform.architecture.as_str());
        let digest = entry["digest"].as_str().unwrap().to_owned();
        assert_ne!(digest, image.manifest.digest, "a platform was not augmented");
        let (_, m) = manifest(client, &format!("{url_base}/v2/{name}/manifests/{digest}")).await;
        let layers: Vec<&str> = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        let mut expected: Vec<&str> = image.layers.iter().map(|l| l.blob.digest.as_str()).collect();
        expected.extend(injected.iter().map(String::as_str));
        assert_eq!(layers, expected);
        // Every blob the manifest names is served under the augmented name.
        let config = m["config"]["digest"].as_str().unwrap();
        for blob in layers.iter().copied().chain([config]) {
            let (status, body) = get(&format!("{url_base}/v2/{name}/blobs/{blob}")).await;
            assert_eq!(status, 200, "{blob}");
            assert_eq!(sha256_digest(&body), blob);
        }
        let (_, cfg_body) = get(&format!("{url_base}/v2/{name}/blobs/{config}")).await;
        let cfg: Value = serde_json::from_slice(&cfg_body).unwrap();
        let diff_ids = cfg["rootfs"]["diff_ids"].as_array().unwrap();
        assert_eq!(diff_ids.len(), expected.len());
        digests.push(digest);
    }
    digests
}

/// From the config file: a directory packed by berth, env and labels, on an
/// image the mirror fetches from its upstream; `docker run` sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_augmented_upstream_image_runs_in_docker_with_the_injected_files_and_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = unique("aug-run");
    let mut layout = OciLayout::create(&tmp.path().join("src"));
    let index = Index::multi_arch(&marker);
    layout.add_index("v1", &index);
    let udata = tempfile::tempdir().unwrap();
    let upstream = berth_process(udata.path(), &[]);
    let repo = format!("team/{}", unique("app"));
    skopeo_copy(
        &layout.reference("v1"),
        &format!("docker://{}/{repo}:v1", upstream.addr),
        true,
    );

    let inject = tmp.path().join("inject");
    std::fs::create_dir_all(inject.join("etc/berth")).unwrap();
    std::fs::write(inject.join("etc/berth/injected.txt"), format!("injected {marker}\n")).unwrap();
    let config = write_config(
        tmp.path(),
        &format!(
            "[[augmentation]]\nname = \"debug\"\nlayers = [{:?}]\nenv = [\"INJECTED=yes\", \"PATH=/bin:/usr/bin\"]\n\
             labels = {{ \"org.example.augmented\" = \"true\" }}\n",
            inject.display()
        ),
    );
    let mdata = tempfile::tempdir().unwrap();
    let mirror = berth_process(
        mdata.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--upstream",
            &format!("up={}", upstream.url),
        ],
    );
    let line = mirror
        .wait_for_log(std::time::Duration::from_secs(10), |l| l["augmentation"] == "debug")
        .expect("the augmentation is logged with its prefix");
    let prefix = line["prefix"].as_str().unwrap().trim_end_matches('/').to_owned();
    assert!(prefix.starts_with("aug/"), "{line}");

    let client = reqwest::Client::new();
    let name = format!("{prefix}/up/{repo}");
    let (_, m) = manifest(&client, &format!("{}/v2/{name}/manifests/v1", mirror.url)).await;
    let amd64 = m["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let (_, image) = manifest(&client, &format!("{}/v2/{name}/manifests/{amd64}", mirror.url)).await;
    let injected = image["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    check_augmented_index(&client, &mirror.url, &name, &index, &[injected]).await;

    let reference = format!("{}/{name}:v1", mirror.addr);
    let docker = |args: &[&str]| tool("docker").args(args).timeout(std::time::Duration::from_secs(180));
    let cleanup = scopeguard(reference.clone());
    let out = docker(&[
        "run",
        "--rm",
        "--network=none",
        &reference,
        "/bin/sh",
        "-c",
        "cat /etc/berth/injected.txt /marker; echo env=$INJECTED",
    ])
    .ok();
    assert!(out.stdout.contains(&format!("injected {marker}")), "{}", out.describe());
    assert!(
        out.stdout.contains(&format!("{marker}-amd64")),
        "the base's files are there: {}",
        out.describe()
    );
    assert!(out.stdout.contains("env=yes"), "{}", out.describe());
    let labels = docker(&["image", "inspect", "--format", "{{json .Config.Labels}}", &reference]).ok();
    assert!(labels.stdout.contains("org.example.augmented"), "{}", labels.describe());
    drop(cleanup);
}

/// Removes a docker image reference when dropped.
fn scopeguard(reference: String) -> impl Drop {
    struct Rmi(String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            let _ = tool("docker").args(["rmi", "-f", self.0.as_str()]).run();
        }
    }
    Rmi(reference)
}

/// Over HTTP: a layer pushed as a blob, defined on two berths that know
/// nothing of each other; the same request gives the same id, and the same
/// base gives byte-identical augmented manifests and configs on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_augmentation_gives_the_same_digests_on_every_berth() {
    let tmp = tempfile::tempdir().unwrap();
    let marker = unique("aug-same");
    let mut layout = OciLayout::create(&tmp.path().join("src"));
    let index = Index::multi_arch(&marker);
    layout.add_index("v1", &index);
    let layer = tool_layer(&marker);
    let client = reqwest::Client::new();
    let request = |layer_digest: &str| {
        serde_json::json!({
            "base": "local/app:v1",
            "layers": [{"repository": "tools/hello", "digest": layer_digest}],
            "env": ["GREETING=berth"],
            "cmd": ["/opt/hello.sh"],
            "labels": {"b": "2", "a": "1"},
        })
    };
    let mut answers = Vec::new();
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let data = tempfile::tempdir().unwrap();
        let server = berth_process(data.path(), &[]);
        skopeo_copy(
            &layout.reference("v1"),
            &format!("docker://{}/local/app:v1", server.addr),
            true,
        );
        let digest = post_blob(&client, &server.url, "tools/hello", layer.blob.bytes.clone()).await;
        let (status, answer) = define(&client, &server.url, request(&digest)).await;
        assert_eq!(status, 201, "{answer}");
        let id = answer["id"].as_str().unwrap().to_owned();
        assert_eq!(answer["image"], format!("{}/aug/{id}/local/app:v1", server.addr));
        assert_eq!(answer["definition"]["layers"][0]["diff_id"], layer.diff_id.as_str());
        // Defining it again changes nothing.
        let (status, again) = define(&client, &server.url, request(&digest)).await;
        assert_eq!((status, &again["id"]), (201, &answer["id"]));
        let (status, shown) = {
            let r = client
                .get(format!("{}/berth/v1/augmentations/{id}", server.url))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap(),
            )
        };
        assert_eq!(status, 200);
        assert_eq!(shown["definition"], answer["definition"]);
        let name = format!("aug/{id}/local/app");
        let (index_digest, _) = manifest(&client, &format!("{}/v2/{name}/manifests/v1", server.url)).await;
        let platforms = check_augmented_index(&client, &server.url, &name, &index, &[digest]).await;
        answers.push((id, index_digest, platforms));
        dirs.push(data);
        servers.push(server);
    }
    assert_eq!(answers[0], answers[1], "two berths made different augmented images");

    // The tag list is the base's; the augmented name is read-only.
    let (_, tags) = get(&format!(
        "{}/v2/aug/{}/local/app/tags/list",
        servers[0].url, answers[0].0
    ))
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&tags).unwrap()["tags"],
        serde_json::json!(["v1"])
    );
    let r = client
        .post(format!(
            "{}/v2/aug/{}/local/app/blobs/uploads/",
            servers[0].url, answers[0].0
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("DENIED"));
}

/// What the API refuses, with the spec's error format and never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_augmentations_are_refused_clearly() {
    let data = tempfile::tempdir().unwrap();
    let server = berth_process(data.path(), &[]);
    let client = reqwest::Client::new();
    let not_a_tar = post_blob(
        &client,
        &server.url,
        "tools/junk",
        b"this is not a tar archive at all".repeat(40),
    )
    .await;
    let missing = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            serde_json::json!({"layers": [{"repository": "tools/junk", "digest": not_a_tar}]}),
            400,
            "not a tar",
        ),
        (
            serde_json::json!({"layers": [{"repository": "tools/junk", "digest": missing}]}),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            serde_json::json!({"layers": [], "env": ["NOEQUALS"]}),
            400,
            "NAME=value",
        ),
        (serde_json::json!({}), 400, "no layer"),
        (serde_json::json!({"layers": [], "surprise": 1}), 400, "unknown field"),
    ];
    for (request, status, needle) in cases {
        let (got, body) = define(&client, &server.url, request.clone()).await;
        assert_eq!(got, status, "{request}: {body}");
        assert!(body.to_string().contains(needle), "{request}: {body}");
        assert!(body["errors"][0]["code"].is_string(), "{body}");
    }
    // An augmentation that was never defined, and a base that does not exist.
    let (status, _) = get(&format!("{}/v2/aug/{}/x/manifests/v1", server.url, "a".repeat(32))).await;
    assert_eq!(status, 404);
    let (status, body) = define(&client, &server.url, serde_json::json!({"env": ["A=1"]})).await;
    assert_eq!(status, 201);
    let id = body["id"].as_str().unwrap();
    let (status, body) = get(&format!("{}/v2/aug/{id}/nothing/here/manifests/v1", server.url)).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}
