//! What a new operator meets first, run through the real executable: a
//! second server on a data directory is refused by name, a source path that
//! is not there stops berth, and the request log says who asked what and
//! why it was refused.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{berth_exe, BerthProcess};

/// Runs a future to completion on a runtime of its own (these tests drive a
/// child process and need no async around them).
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn get_status(url: &str) -> u16 {
    block(async { reqwest::get(url).await.unwrap().status().as_u16() })
}

fn serve_output(data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(berth_exe())
        .args(["serve", "--listen", "127.0.0.1:0", "--no-self-image", "--data"])
        .arg(data)
        .args(extra)
        .output()
        .expect("berth runs")
}

#[test]
fn a_second_server_on_one_data_directory_is_refused_naming_the_first() {
    let data = tempfile::tempdir().unwrap();
    let first = BerthProcess::spawn(data.path(), &["--no-self-image"]);
    let out = serve_output(data.path(), &[]);
    assert!(!out.status.success(), "the second server must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = first.child.id().to_string();
    assert!(
        stderr.contains(&format!("pid {pid}")) && stderr.contains("serving the data directory"),
        "{stderr}"
    );
    // The first one is unaffected.
    assert_eq!(get_status(&format!("{}/v2/", first.url)), 200);
    // Once it is gone (even killed), the directory is free again.
    drop(first);
    let again = BerthProcess::spawn(data.path(), &["--no-self-image"]);
    assert_eq!(get_status(&format!("{}/v2/", again.url)), 200);
}

#[test]
fn a_source_path_that_does_not_exist_stops_berth() {
    let data = tempfile::tempdir().unwrap();
    let out = serve_output(data.path(), &["--source", "missing=/nonexistent/images.tar"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/images.tar") && stderr.contains("--source"),
        "{stderr}"
    );
}

#[test]
fn request_log_lines_say_who_asked_what_and_why_it_failed() {
    let data = tempfile::tempdir().unwrap();
    let server = BerthProcess::spawn(data.path(), &["--no-self-image"]);
    let startup = server
        .wait_for_log(Duration::from_secs(5), |l| l["message"] == "berth is serving")
        .expect("startup line");
    let storage = startup["storage"].as_str().unwrap();
    assert!(
        storage.contains(data.path().to_str().unwrap()) && storage.contains("grouped"),
        "{startup}"
    );

    let client = reqwest::Client::builder()
        .user_agent("first-run-test/1.0")
        .build()
        .unwrap();
    let (put, post) = block(async {
        let put = client
            .put(format!("{}/v2/log/app/manifests/v1", server.url))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        let post = client
            .post(format!(
                "{}/v2/log/app/blobs/uploads/?mount=sha256:abc&from=x",
                server.url
            ))
            .send()
            .await
            .unwrap();
        (put.status(), post.status())
    });
    assert_eq!(put, 400);
    assert_eq!(post, 202);

    let is_access = |l: &serde_json::Value| l["method"].is_string() && l["status"].is_number();
    let put = server
        .wait_for_log(Duration::from_secs(5), |l| is_access(l) && l["method"] == "PUT")
        .expect("a log line for the PUT");
    assert_eq!(put["status"], 400);
    assert_eq!(put["error"], "MANIFEST_INVALID", "{put}");
    assert!(
        put["error_message"].as_str().unwrap().contains("manifest invalid"),
        "{put}"
    );
    assert_eq!(put["user_agent"], "first-run-test/1.0");
    assert!(put["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{put}");
    // Rounded: no float noise in the duration.
    let duration = put["duration_ms"].to_string();
    assert!(duration.split('.').nth(1).is_none_or(|frac| frac.len() <= 3), "{put}");

    let post = server
        .wait_for_log(Duration::from_secs(5), |l| is_access(l) && l["method"] == "POST")
        .expect("a log line for the POST");
    assert_eq!(post["query"], "mount=sha256:abc&from=x", "{post}");
    assert!(post["error"].is_null(), "a 202 carries no error: {post}");
}
