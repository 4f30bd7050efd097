//! berth's own API (`/berth/v1/...`) from tests: garbage collection passes,
//! usage, and any request whose JSON answer a test reads.

use serde_json::Value;

/// `method url` with an empty body: the status and the JSON answer
/// (`Null` when the body is not JSON).
pub fn http(method: &str, url: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
}

/// Runs a garbage collection pass over HTTP (`url` is the server's base);
/// returns its report.
pub fn gc_pass(url: &str) -> Value {
    let (status, report) = http("POST", &format!("{url}/berth/v1/gc"));
    assert_eq!(status, 200, "{report}");
    report
}

/// What a pass would do (`GET /berth/v1/gc`).
pub fn gc_dry_run(url: &str) -> Value {
    let (status, report) = http("GET", &format!("{url}/berth/v1/gc"));
    assert_eq!(status, 200, "{report}");
    report
}
