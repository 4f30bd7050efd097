//! The browse API (`/berth/v1/browse/...`) and the page's files over HTTP:
//! what it answers for pushed images, its paging and search, bad input, and
//! what it shows and allows under the access policy.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::StatusCode;
use serde_json::Value;
use support::auth::{basic, server_args, AuthFiles};
use support::TestServer;

async fn browse(c: &Client, path: &str) -> Value {
    let r = c.get(&format!("/berth/v1/browse/{path}")).await;
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    json_body(r).await
}

fn names(page: &Value) -> Vec<&str> {
    page["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn browse_answers_for_pushed_images() {
    let server = TestServer::start_with(&["--no-self-image"]);
    let c = Client::new(&server.url);
    for repo in ["lib/alpha", "lib/beta", "lib/deep/gamma", "solo"] {
        c.push_image(repo, "v1", 7).await;
    }
    let (manifest, digest) = c.push_image("lib/alpha", "v2", 8).await;
    c.put_manifest("lib/alpha", "also-v2", OCI_MANIFEST, &manifest).await;
    c.push_empty_config("lib/alpha").await;
    let sig = artifact_manifest("application/vnd.example.sig", &digest, manifest.len(), "<b>x</b>");
    let sig_digest = sha256(&sig);
    assert_eq!(
        c.put_manifest("lib/alpha", &sig_digest, OCI_MANIFEST, &sig)
            .await
            .status(),
        StatusCode::CREATED
    );

    // The catalog: all, paged, searched, below a namespace.
    let all = browse(&c, "repositories").await;
    assert_eq!(all["total"], 4);
    assert_eq!(names(&all), ["lib/alpha", "lib/beta", "lib/deep/gamma", "solo"]);
    assert_eq!(
        all["namespaces"],
        serde_json::json!([{"name": "lib", "repositories": 3}])
    );
    let alpha = &all["repositories"][0];
    assert_eq!(alpha["tags"], 3);
    assert!(alpha["last_push"].as_u64().unwrap() > 1_700_000_000);
    // config ({"architecture":"amd64","os":"linux","seed":8}: 46 bytes) + data(8, 1008)
    let v2_size = 46 + 1008;
    assert_eq!(alpha["size"], v2_size);
    let page = browse(&c, "repositories?n=2&offset=1").await;
    assert_eq!(page["total"], 4);
    assert_eq!(names(&page), ["lib/beta", "lib/deep/gamma"]);
    assert_eq!(names(&browse(&c, "repositories?q=GAM").await), ["lib/deep/gamma"]);
    let under = browse(&c, "repositories?prefix=lib").await;
    assert_eq!(under["total"], 3);
    assert_eq!(
        under["namespaces"],
        serde_json::json!([{"name": "lib/deep", "repositories": 1}])
    );

    // A repository: every tag, one request.
    let repo = browse(&c, "repository?name=lib/alpha").await;
    assert_eq!(repo["may_delete"], true);
    assert_eq!(repo["read_only"], false);
    let tags = repo["tags"].as_array().unwrap();
    let tag_names: Vec<_> = tags.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(tag_names, ["also-v2", "v1", "v2"]);
    let v2 = &tags[2];
    assert_eq!(v2["digest"], digest.as_str());
    assert_eq!(v2["size"], v2_size);
    assert_eq!(v2["platforms"], serde_json::json!(["linux/amd64"]));
    assert_eq!(v2["kind"], "image");
    assert_eq!(v2["referrers"][0]["digest"], sig_digest.as_str());
    assert_eq!(v2["referrers"][0]["artifactType"], "application/vnd.example.sig");
    assert!(tags[1]["referrers"].as_array().unwrap().is_empty());

    // An image, by tag and by digest.
    let image = browse(&c, "image?name=lib/alpha&reference=v2").await;
    assert_eq!(image["digest"], digest.as_str());
    assert_eq!(image["tags"], serde_json::json!(["also-v2", "v2"]));
    assert_eq!(image["manifest"].as_str().unwrap().as_bytes(), &manifest[..]);
    assert_eq!(image["config"]["os"], "linux");
    assert_eq!(image["layers"][0]["size"], 1008);
    assert_eq!(image["referrers"][0]["digest"], sig_digest.as_str());
    let by_digest = browse(&c, &format!("image?name=lib/alpha&reference={digest}")).await;
    assert_eq!(by_digest["digest"], digest.as_str());
    let artifact = browse(&c, &format!("image?name=lib/alpha&reference={sig_digest}")).await;
    assert_eq!(artifact["subject"]["digest"], digest.as_str());
    assert!(artifact.get("config").is_none());

    // Bad input: the spec's errors, never a 500.
    let c = &c;
    let bad = |p: &'static str| async move { c.get(&format!("/berth/v1/browse/{p}")).await };
    assert_error(bad("repository").await, 400, "UNSUPPORTED").await;
    assert_error(bad("repository?name=Bad..Name").await, 400, "NAME_INVALID").await;
    assert_error(bad("repository?name=absent").await, 404, "NAME_UNKNOWN").await;
    assert_error(
        bad("image?name=lib/alpha&reference=nope").await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_error(
        bad("image?name=lib/alpha&reference=sha256:zz").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_error(bad("image?name=lib/alpha").await, 400, "UNSUPPORTED").await;
    assert_error(bad("repositories?n=-1").await, 400, "UNSUPPORTED").await;
    assert_error(bad("nothing").await, 404, "UNSUPPORTED").await;
    let post = c
        .req(reqwest::Method::POST, "/berth/v1/browse/repositories")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The page's files, with a policy that runs only their own scripts.
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(header(&r, "content-type").unwrap().starts_with(kind), "{path}");
        assert!(header(&r, "content-security-policy")
            .unwrap()
            .contains("script-src 'self'"));
    }
    assert!(text(c.get("/").await).await.contains("/ui/app.js"));
    assert_eq!(c.get("/ui/nothing.js").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(c.get("/ui").await.status(), StatusCode::PERMANENT_REDIRECT);
}

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "bu1lder-pw"), ("carol", "c-pw")];

/// Anonymous pull of public/**; bob pulls and pushes team/** but may not
/// delete; alice may delete there too; carol may nothing there.
const POLICY: &str = r#"
default = []

[[access]]
repository = "public/**"
anonymous = ["pull"]

[[access]]
repository = "team/**"
users = { alice = ["pull", "push", "delete"], bob = ["pull", "push"] }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn browse_follows_the_access_policy() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let anon = Client::new(&server.url);
    let alice = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let bob = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));
    let wrong = Client::with_authorization(&server.url, &basic("alice", "nope"));
    alice.push_image("team/app", "v1", 1).await;
    let carol = Client::with_authorization(&server.url, &basic("carol", "c-pw"));

    // The page's files need no credentials.
    assert_eq!(anon.get("/").await.status(), StatusCode::OK);

    let session = browse(&anon, "session").await;
    assert_eq!(session["auth"], true);
    assert_eq!(session["user"], Value::Null);
    assert_eq!(browse(&alice, "session").await["user"], "alice");

    // Anonymous: sees nothing of team/**, and a refusal carries no challenge
    // (a browser would put up its own dialog over the page's sign-in form).
    assert_eq!(browse(&anon, "repositories").await["total"], 0);
    let r = anon.get("/berth/v1/browse/repository?name=team/app").await;
    assert!(header(&r, "www-authenticate").is_none());
    assert_error(r, 401, "UNAUTHORIZED").await;
    let r = wrong.get("/berth/v1/browse/session").await;
    assert!(header(&r, "www-authenticate").is_none());
    assert_error(r, 401, "UNAUTHORIZED").await;

    // bob sees team/app but may not delete; alice may.
    assert_eq!(names(&browse(&bob, "repositories").await), ["team/app"]);
    assert_eq!(browse(&bob, "repository?name=team/app").await["may_delete"], false);
    assert_eq!(
        browse(&bob, "image?name=team/app&reference=v1").await["may_delete"],
        false
    );
    assert_eq!(browse(&alice, "repository?name=team/app").await["may_delete"], true);

    // A signed-in user the policy gives nothing there: not listed, 403.
    assert_eq!(browse(&carol, "repositories").await["total"], 0);
    let r = carol.get("/berth/v1/browse/image?name=team/app&reference=v1").await;
    assert!(header(&r, "www-authenticate").is_none());
    assert_error(r, 403, "DENIED").await;
}
