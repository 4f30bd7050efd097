//! `/metrics`, `/healthz`, `/readyz` and webhook notifications, against a
//! real server: the metrics move with real requests and parse as Prometheus
//! text, readiness follows storage, and events reach a real HTTP receiver on
//! 127.0.0.1 (while an endpoint that is down costs dropped events, not memory
//! or speed).

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::TestServer;

/// One sample: metric name, labels, value.
type Sample = (String, HashMap<String, String>, f64);

/// Checks every line of `text` against the text format's grammar (comments
/// `# HELP`/`# TYPE`, samples `name{label="value",...} number`), then parses
/// it with a Prometheus parser crate too. Panics naming the first bad line.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            if let Some(t) = comment.strip_prefix("TYPE ") {
                let kind = t.split(' ').nth(1).unwrap_or("");
                assert!(["counter", "gauge", "histogram", "untyped"].contains(&kind), "{line}");
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, HashMap::new()),
            Some((name, rest)) => {
                let rest = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = HashMap::new();
                for pair in rest.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label value: {line}"));
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name, labels)
            }
        };
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push((name.to_owned(), labels, value));
    }
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the Prometheus parser reads it");
    assert!(
        parsed.samples.iter().any(|s| s.metric == "berth_build_info"),
        "the Prometheus parser finds the samples"
    );
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.2)
}

async fn scrape(c: &Client, url: &str) -> Vec<Sample> {
    let r = c.http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = header(&r, "content-type").unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_metrics(&text(r).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_real_requests() {
    let s = server();
    let c = Client::new(&s.url);
    let before = scrape(&c, &s.url).await;
    assert_eq!(
        value(&before, "berth_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    let manifest_gets = |samples: &[Sample], class| {
        value(
            samples,
            "berth_http_requests_total",
            &[("route", "manifest"), ("method", "GET"), ("status", class)],
        )
        .unwrap()
    };
    assert_eq!(manifest_gets(&before, "2xx"), 0.0, "every series exists from the start");

    let (manifest, digest) = c.push_image("team/app", "v1", 7).await;
    for _ in 0..3 {
        assert_eq!(c.get("/v2/team/app/manifests/v1").await.status(), StatusCode::OK);
    }
    assert_eq!(
        c.get("/v2/team/app/manifests/nope").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(c.get("/wp-login.php").await.status(), StatusCode::NOT_FOUND);
    let after = scrape(&c, &s.url).await;

    assert_eq!(manifest_gets(&after, "2xx"), 3.0);
    assert_eq!(manifest_gets(&after, "4xx"), 1.0);
    let other = [("route", "other"), ("method", "GET"), ("status", "4xx")];
    assert_eq!(value(&after, "berth_http_requests_total", &other), Some(1.0));
    let puts = [("route", "manifest"), ("method", "PUT"), ("status", "2xx")];
    assert_eq!(value(&after, "berth_http_requests_total", &puts), Some(1.0));
    // The first scrape is counted by the second.
    let scrapes = [("route", "metrics"), ("method", "GET"), ("status", "2xx")];
    assert_eq!(value(&after, "berth_http_requests_total", &scrapes), Some(1.0));

    // The histogram: 4 manifest GETs, cumulative buckets ending in +Inf = count.
    let route = [("route", "manifest"), ("method", "GET")];
    let count = value(&after, "berth_http_request_duration_seconds_count", &route).unwrap();
    assert_eq!(count, 4.0);
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter(|(n, l, _)| {
            n == "berth_http_request_duration_seconds_bucket"
                && l.get("route").map(String::as_str) == Some("manifest")
                && l.get("method").map(String::as_str) == Some("GET")
        })
        .map(|(_, l, v)| (l["le"].parse::<f64>().unwrap_or(f64::INFINITY), *v))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 10, "explicit buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 4.0));
    let sum = value(&after, "berth_http_request_duration_seconds_sum", &route).unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    // Bytes: three manifests out; the pushed blobs and manifest in.
    let out = value(&after, "berth_http_response_body_bytes_total", &[("route", "manifest")]).unwrap();
    assert!(out >= 3.0 * manifest.len() as f64, "{out}");
    let manifest_in = value(&after, "berth_http_request_body_bytes_total", &[("route", "manifest")]).unwrap();
    assert_eq!(manifest_in, manifest.len() as f64);
    let blobs_in = value(&after, "berth_http_request_body_bytes_total", &[("route", "upload")]).unwrap();
    assert!(blobs_in >= 1000.0, "{blobs_in}");

    // Only the scrape itself is in flight; no upload is left open.
    assert_eq!(value(&after, "berth_http_requests_in_flight", &[]), Some(1.0));
    assert_eq!(value(&after, "berth_uploads_open", &[]), Some(0.0));
    // Storage: the push wrote, the pulls read, nothing failed.
    let puts = value(&after, "berth_storage_operations_total", &[("operation", "put")]).unwrap();
    assert!(puts >= 3.0, "{puts}");
    let errors: f64 = after
        .iter()
        .filter(|(n, _, _)| n == "berth_storage_errors_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(errors, 0.0);
    assert_eq!(value(&after, "berth_self_image", &[("state", "disabled")]), Some(1.0));

    // An upload started and not finished is open.
    let _loc = c.start_upload("team/app").await;
    let open = scrape(&c, &s.url).await;
    assert_eq!(value(&open, "berth_uploads_open", &[]), Some(1.0));

    // A garbage collection pass is counted with what it freed.
    assert_eq!(
        c.delete(&format!("/v2/team/app/manifests/{digest}")).await.status(),
        StatusCode::ACCEPTED
    );
    let r = c.http.post(format!("{}/berth/v1/gc", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let gc = scrape(&c, &s.url).await;
    assert_eq!(value(&gc, "berth_gc_passes_total", &[("result", "ok")]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_can_be_turned_off_and_moved() {
    let s = server_with(&["--metrics", "off"]);
    let c = Client::new(&s.url);
    assert_eq!(c.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(c.get("/healthz").await.status(), StatusCode::OK);
    drop(s);

    // On a listener of their own, the metrics leave the main one.
    let data = tempfile::tempdir().unwrap();
    let p = support::BerthProcess::spawn(data.path(), &["--no-self-image", "--metrics-listen", "127.0.0.1:0"]);
    let line = p
        .wait_for_log(Duration::from_secs(20), |l| l["message"] == "serving metrics")
        .or_else(|| p.wait_for_log(Duration::from_secs(1), |l| l["fields"]["message"] == "serving metrics"))
        .expect("the metrics listener is logged");
    let addr = line["addr"]
        .as_str()
        .or(line["fields"]["addr"].as_str())
        .unwrap()
        .to_owned();
    let c = Client::new(&p.url);
    assert_eq!(c.get("/metrics").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(c.get("/v2/").await.status(), StatusCode::OK);
    let samples = scrape(&c, &format!("http://{addr}")).await;
    let base = [("route", "base"), ("method", "GET"), ("status", "2xx")];
    assert_eq!(value(&samples, "berth_http_requests_total", &base), Some(1.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_follow_storage() {
    let s = server();
    let c = Client::new(&s.url);
    let r = c.get("/healthz").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(c.get("/readyz").await.status(), StatusCode::OK);
    // The probe leaves nothing behind, and nothing in the distribution layout.
    let probe_dir = s.data.join("berth/v1/probe");
    assert_eq!(std::fs::read_dir(&probe_dir).unwrap().count(), 0);
    assert!(!s.data.join("docker/registry/v2/probe").exists());

    // Where the probe writes cannot be written (a file where its directory
    // should be): not ready, saying why; ready again once it is repaired.
    std::fs::remove_dir(&probe_dir).unwrap();
    std::fs::write(&probe_dir, b"in the way").unwrap();
    let r = c.get("/readyz").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = text(r).await;
    assert!(body.contains("storage: write failed"), "{body}");
    assert_eq!(c.get("/healthz").await.status(), StatusCode::OK, "alive all the same");
    std::fs::remove_file(&probe_dir).unwrap();
    assert_eq!(c.get("/readyz").await.status(), StatusCode::OK);

    // A read-only filesystem under the data directory (a real EROFS), where
    // this machine lets us mount one.
    let data = s.data.display().to_string();
    let bind = std::process::Command::new("mount")
        .args(["--bind", &data, &data])
        .status();
    if !bind.is_ok_and(|s| s.success()) {
        eprintln!("skipping the read-only mount check: cannot bind-mount here");
        return;
    }
    let ro = std::process::Command::new("mount")
        .args(["-o", "remount,ro,bind", &data])
        .status()
        .is_ok_and(|s| s.success());
    if ro {
        let r = c.get("/readyz").await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = text(r).await;
        assert!(body.contains("storage:"), "{body}");
    }
    let umount = std::process::Command::new("umount")
        .args(["-l", &data])
        .status()
        .unwrap();
    assert!(umount.success());
    assert_eq!(c.get("/readyz").await.status(), StatusCode::OK);
    assert!(ro, "bind-mounted but could not remount read-only");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_waits_for_the_self_image() {
    let s = TestServer::start();
    let c = Client::new(&s.url);
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let r = c.get("/readyz").await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = text(r).await;
        assert!(body.contains("self image: still being packaged"), "{body}");
        assert!(Instant::now() < end, "the self image never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let samples = scrape(&c, &s.url).await;
    assert_eq!(value(&samples, "berth_self_image", &[("state", "ready")]), Some(1.0));
    assert_eq!(
        value(&samples, "berth_self_image", &[("state", "packaging")]),
        Some(0.0)
    );
}

/// What the webhook receiver got: (headers, parsed body) per request.
type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, serde_json::Value)>>>;

/// A webhook receiver on 127.0.0.1:<ephemeral>; returns its URL.
async fn receiver(got: Received) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/events",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                got.lock().unwrap().push((headers, v));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn events(got: &Received) -> Vec<serde_json::Value> {
    got.lock()
        .unwrap()
        .iter()
        .flat_map(|(_, v)| v["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

async fn wait_for_events(got: &Received, n: usize) -> Vec<serde_json::Value> {
    let end = Instant::now() + Duration::from_secs(20);
    while events(got).len() < n && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events(got)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_deliver_push_pull_and_delete_and_drop_when_down() {
    let got: Received = Arc::default();
    let url = receiver(got.clone()).await;
    // An endpoint that is down the slow way: it takes connections (the
    // kernel's backlog does) and never answers, so every try runs into its
    // timeout while events keep coming.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/events", black_hole.local_addr().unwrap());
    let config = format!(
        r#"
[[notifications.endpoints]]
name = "receiver"
url = "{url}"
headers = {{ X-Token = "s3cret" }}
repositories = ["team/**"]

[[notifications.endpoints]]
name = "down"
url = "{dead}"
timeout = "2s"
retries = 2
backoff = "1s"
queue = 4
"#
    );
    let s = TestServer::start_with_config(&config, &["--no-self-image"]);
    let c = Client::new(&s.url);

    let (manifest, digest) = c.push_image("team/app", "v1", 3).await;
    let r = c
        .http
        .get(format!("{}/v2/team/app/manifests/v1", s.url))
        .header("user-agent", "webhook-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // HEAD is not a pull (distribution sends none either), and other repositories are filtered out.
    assert_eq!(c.head("/v2/team/app/manifests/v1").await.status(), StatusCode::OK);
    c.push_image("elsewhere/app", "v1", 4).await;
    let layer = sha256(&data(3, 1000 + 3));
    assert_eq!(
        c.delete(&format!("/v2/team/app/blobs/{layer}")).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.delete(&format!("/v2/team/app/manifests/{digest}")).await.status(),
        StatusCode::ACCEPTED
    );

    let evs = wait_for_events(&got, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evs = if evs.len() < events(&got).len() {
        events(&got)
    } else {
        evs
    };
    let actions: Vec<&str> = evs.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["push", "pull", "delete", "delete"], "{evs:#?}");

    let push = &evs[0];
    let t = &push["target"];
    assert_eq!(t["repository"], "team/app");
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["tag"], "v1");
    assert_eq!(t["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(t["size"], manifest.len() as u64);
    assert_eq!(t["length"], manifest.len() as u64);
    assert_eq!(
        t["url"],
        format!("http://{}/v2/team/app/manifests/{digest}", s.host()).as_str()
    );
    assert_eq!(push["request"]["method"], "PUT");
    assert_eq!(push["request"]["host"], s.host().as_str());
    assert!(push["request"]["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!push["id"].as_str().unwrap().is_empty());
    assert!(push["timestamp"].as_str().unwrap().contains('T'));
    assert_eq!(push["source"]["addr"], s.host().as_str());
    assert!(!push["source"]["instanceID"].as_str().unwrap().is_empty());

    let pull = &evs[1];
    assert_eq!(pull["target"]["digest"], digest.as_str());
    assert_eq!(pull["target"]["size"], manifest.len() as u64);
    assert_eq!(pull["request"]["useragent"], "webhook-test/1.0");
    assert_eq!(pull["request"]["method"], "GET");

    assert_eq!(evs[2]["target"]["digest"], layer.as_str());
    assert!(evs[2]["target"]["url"].as_str().unwrap().contains("/blobs/"));
    assert_eq!(evs[3]["target"]["digest"], digest.as_str());
    assert!(evs[3]["target"].get("tag").is_none());

    for (headers, _) in got.lock().unwrap().iter() {
        assert_eq!(
            headers["content-type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
        assert_eq!(headers["x-token"], "s3cret");
    }

    // The endpoint that is down: its queue of 4 fills and the rest is
    // dropped and counted, while pulls stay fast.
    let start = Instant::now();
    c.push_image("team/other", "v1", 5).await;
    for _ in 0..200 {
        assert_eq!(c.get("/v2/team/other/manifests/v1").await.status(), StatusCode::OK);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "200 pulls took {took:?}");
    let samples = scrape(&c, &s.url).await;
    let down = [("endpoint", "down")];
    let dropped = value(&samples, "berth_notifications_dropped_total", &down).unwrap();
    assert!(dropped >= 150.0, "dropped {dropped}");
    let queued = value(&samples, "berth_notifications_queued", &down).unwrap();
    assert!(queued <= 4.0, "the queue is bounded: {queued}");
    let receiver_dropped = value(
        &samples,
        "berth_notifications_dropped_total",
        &[("endpoint", "receiver")],
    );
    assert_eq!(receiver_dropped, Some(0.0));
    let sent = value(&samples, "berth_notifications_sent_total", &[("endpoint", "receiver")]).unwrap();
    assert!(sent >= 1.0);
    drop(black_hole);
}

#[test]
fn notification_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (config, says) in [
        (
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"ftp://x\"\n",
            "must be http or https",
        ),
        (
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nactions = [\"push\", \"tag\"]\n",
            "unknown action",
        ),
        (
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"soon\"\n",
            "not a duration",
        ),
        (
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nqueue = 0\n",
            "at least 1",
        ),
        (
            "[[notifications.endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nretry = 3\n",
            "retry",
        ),
    ] {
        let file = support::write_config(dir.path(), config);
        let out = support::berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()]).run();
        assert!(!out.status.success(), "{config}");
        let err = &out.stderr;
        assert!(err.contains(says), "{config}: {err}");
    }
    // Header values are secrets: --check-config does not print them.
    let file = support::write_config(
        dir.path(),
        "[[notifications.endpoints]]\nname = \"a\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { Authorization = \"Bearer hunter2\" }\n",
    );
    let out = support::berth_cli(["serve", "--check-config", "--config", file.to_str().unwrap()]).run();
    assert!(out.status.success(), "{}", out.describe());
    let printed = &out.stdout;
    assert!(
        printed.contains("Authorization") && !printed.contains("hunter2"),
        "{printed}"
    );
}
