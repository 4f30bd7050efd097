//! Authentication and the access policy over HTTP: Basic with an htpasswd
//! file, the built-in token service, tokens of an external issuer, the
//! challenges of 401 answers, and what the request log says.

mod conformance_common;
mod support;

use conformance_common::*;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use support::auth::{basic, server_args, AuthFiles, TestIssuer};
use support::TestServer;

const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "bu1lder-pw")];

/// Anonymous pull of public/**, signed-in users pull and push everywhere,
/// alice also moves tags and deletes under team/**.
const POLICY: &str = r#"
default = ["pull", "push"]

[[access]]
repository = "public/**"
anonymous = ["pull"]

[[access]]
repository = "team/**"
users = { alice = ["overwrite", "delete"] }
"#;

fn www_authenticate(r: &reqwest::Response) -> String {
    header(r, "www-authenticate").unwrap_or("").to_owned()
}

async fn status_of(c: &Client, method: Method, path: &str) -> StatusCode {
    c.req(method, path).send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_and_policy() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let anon = Client::new(&server.url);
    let alice = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let bob = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));
    let wrong = Client::with_authorization(&server.url, &basic("alice", "wrong"));

    // /v2/ asks for credentials (some requests need them), and checks them.
    let r = anon.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(www_authenticate(&r), "Basic realm=\"berth\"");
    assert_error(wrong.get("/v2/").await, 401, "UNAUTHORIZED").await;
    assert_eq!(alice.get("/v2/").await.status(), StatusCode::OK);

    // Anonymous pull of the public prefix; nothing else without credentials.
    let (_, public_digest) = alice.push_image("public/app", "v1", 1).await;
    assert_eq!(
        status_of(&anon, Method::GET, "/v2/public/app/manifests/v1").await,
        StatusCode::OK
    );
    let r = anon.get(&format!("/v2/public/app/manifests/{public_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = anon
        .req(Method::POST, "/v2/public/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(www_authenticate(&r), "Basic realm=\"berth\"");
    assert_error(r, 401, "UNAUTHORIZED").await;
    alice.push_image("team/app", "v1", 2).await;
    assert_eq!(
        status_of(&anon, Method::GET, "/v2/team/app/manifests/v1").await,
        StatusCode::UNAUTHORIZED
    );
    // Wrong credentials are refused even where anonymous callers may pull.
    assert_eq!(
        status_of(&wrong, Method::GET, "/v2/public/app/manifests/v1").await,
        StatusCode::UNAUTHORIZED
    );

    // push creates tags; moving one needs overwrite; pushing the same manifest again does not.
    let (m3, _) = bob.push_image("team/app", "v3", 3).await;
    let r = bob.put_manifest("team/app", "v3", OCI_MANIFEST, &m3).await;
    assert_eq!(r.status(), StatusCode::CREATED, "the same manifest again");
    let (m4, _) = bob.push_image("team/app", "v4", 4).await;
    let body = assert_error(
        bob.put_manifest("team/app", "v3", OCI_MANIFEST, &m4).await,
        403,
        "DENIED",
    )
    .await;
    assert_eq!(body["errors"][0]["detail"][0]["Action"], "overwrite", "{body}");
    let r = bob.put_manifest("team/app", "v3?tag=v4", OCI_MANIFEST, &m3).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "an extra ?tag= that moves a tag");
    assert_eq!(
        alice.put_manifest("team/app", "v3", OCI_MANIFEST, &m4).await.status(),
        StatusCode::CREATED
    );
    // Delete is alice's only.
    assert_error(bob.delete("/v2/team/app/manifests/v3").await, 403, "DENIED").await;
    assert_eq!(
        alice.delete("/v2/team/app/manifests/v3").await.status(),
        StatusCode::ACCEPTED
    );

    // The catalog lists what the caller may pull.
    let anon_catalog = json_body(anon.get("/v2/_catalog").await).await;
    assert_eq!(anon_catalog["repositories"], serde_json::json!(["public/app"]));
    let bob_catalog = json_body(bob.get("/v2/_catalog").await).await;
    assert_eq!(
        bob_catalog["repositories"],
        serde_json::json!(["public/app", "team/app"])
    );
    // Tags of a repository the caller may not pull: 401.
    assert_eq!(
        status_of(&anon, Method::GET, "/v2/team/app/tags/list").await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_needs_pull_on_the_source() {
    let files = AuthFiles::new(
        &[("alice", "a-pw"), ("bob", "b-pw"), ("root", "r-pw")],
        r#"
        default = []
        admins = ["root"]
        [[access]]
        repository = "alice/**"
        users = { alice = ["*"] }
        [[access]]
        repository = "bob/**"
        users = { bob = ["*"] }
        [[access]]
        repository = "shared/**"
        authenticated = ["pull"]
        "#,
    );
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let alice = Client::with_authorization(&server.url, &basic("alice", "a-pw"));
    let bob = Client::with_authorization(&server.url, &basic("bob", "b-pw"));
    let root = Client::with_authorization(&server.url, &basic("root", "r-pw"));
    let private = alice.push_blob("alice/src", b"alice's layer").await;
    let shared = root.push_blob("shared/src", b"a shared layer").await;
    let mount = |digest: &str, from: &str| format!("/v2/bob/dst/blobs/uploads/?mount={digest}&from={from}");
    // No pull on alice/src: an ordinary upload session instead of a mount.
    let r = bob
        .req(Method::POST, &mount(&private, "alice/src"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        status_of(&bob, Method::HEAD, &format!("/v2/bob/dst/blobs/{private}")).await,
        StatusCode::NOT_FOUND
    );
    // Pull on shared/src: mounted.
    let r = bob
        .req(Method::POST, &mount(&shared, "shared/src"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        status_of(&bob, Method::HEAD, &format!("/v2/bob/dst/blobs/{shared}")).await,
        StatusCode::OK
    );
    // Without any right in a repository: 403 for a signed-in user.
    assert_error(bob.get("/v2/alice/src/tags/list").await, 403, "DENIED").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_are_rate_limited() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let wrong = Client::with_authorization(&server.url, &basic("alice", "guess"));
    let mut limited = None;
    for i in 0..30 {
        let r = wrong.get("/v2/").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((i, header(&r, "retry-after").map(str::to_owned)));
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let (after, retry) = limited.expect("wrong passwords were never limited");
    assert!((5..=15).contains(&after), "limited after {after} failures");
    assert!(retry.is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    // While limited, even the right password is not checked (bcrypt is not run)...
    let right = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    assert_eq!(right.get("/v2/").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...but other users from elsewhere are not affected (all requests here come
    // from 127.0.0.1, so the address limit applies to bob too).
    let bob = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));
    assert_eq!(bob.get("/v2/").await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread")]
async fn htpasswd_changes_apply_without_restart() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let alice = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let carol = Client::with_authorization(&server.url, &basic("carol", "new-user"));
    assert_eq!(alice.get("/v2/").await.status(), StatusCode::OK);
    files.write_users(&[("carol", "new-user"), ("bob", "bu1lder-pw")]);
    let mut ok = false;
    for _ in 0..100 {
        if carol.get("/v2/").await.status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "a user added to the file could not sign in");
    // Removed users are out at once, even though alice's check was cached.
    assert_eq!(alice.get("/v2/").await.status(), StatusCode::UNAUTHORIZED);
}

/// `application/x-www-form-urlencoded` of `pairs` (the values here need only spaces and `:`/`,` encoded).
fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |v: &str| {
        v.replace('%', "%25")
            .replace(' ', "+")
            .replace(':', "%3A")
            .replace(',', "%2C")
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(token).unwrap().claims
}

async fn get_token(c: &Client, query: &str) -> (StatusCode, Value) {
    let r = c.get(&format!("/token?{query}")).await;
    let status = r.status();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body)
}

fn access_of(token: &str) -> Vec<String> {
    claims_of(token)["access"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect();
            format!(
                "{}:{}:{}",
                a["type"].as_str().unwrap(),
                a["name"].as_str().unwrap(),
                actions.join(",")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn built_in_token_service() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let data = tempfile::tempdir().unwrap();
    let data_path = data.path().display().to_string();
    let server = TestServer::start_with(&server_args(&args, &["--token", "--data", &data_path]));
    let anon = Client::new(&server.url);
    let alice_basic = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let bob_basic = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));

    // The challenge sends clients to this server's /token.
    let r = anon.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let realm = format!("http://{}/token", server.host());
    assert_eq!(
        www_authenticate(&r),
        format!("Bearer realm=\"{realm}\",service=\"berth\"")
    );
    let r = anon.get("/v2/team/app/manifests/v1").await;
    assert_eq!(
        www_authenticate(&r),
        format!("Bearer realm=\"{realm}\",service=\"berth\",scope=\"repository:team/app:pull\"")
    );
    let r = anon
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert!(www_authenticate(&r).ends_with(",scope=\"repository:team/app:pull,push\""));

    // Anonymous tokens grant what anonymous callers may do, and no more.
    let (status, body) = get_token(
        &anon,
        "service=berth&scope=repository:public/app:pull,push&scope=repository:team/app:pull",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let anon_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["access_token"], body["token"]);
    assert!(body["expires_in"].as_u64().unwrap() >= 60);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'));
    assert!(body.get("refresh_token").is_none());
    assert_eq!(access_of(&anon_token), ["repository:public/app:pull"]);
    let c = claims_of(&anon_token);
    assert_eq!(
        (c["iss"].as_str(), c["aud"].as_str(), c["sub"].as_str()),
        (Some("berth"), Some("berth"), Some(""))
    );
    for claim in ["exp", "nbf", "iat", "jti"] {
        assert!(c.get(claim).is_some(), "{claim} missing: {c}");
    }

    // Signed-in: push asks for overwrite too, granted where the policy allows it.
    let scope = "service=berth&scope=repository:team/app:pull,push&offline_token=true&client_id=test";
    let (status, body) = get_token(&alice_basic, scope).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(access_of(&alice_token), ["repository:team/app:pull,push,overwrite"]);
    assert!(body["refresh_token"].is_string());
    let (_, body) = get_token(&bob_basic, scope).await;
    let bob_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(access_of(&bob_token), ["repository:team/app:pull,push"]);
    // Wrong password or service: no token.
    let wrong = Client::with_authorization(&server.url, &basic("alice", "nope"));
    assert_eq!(get_token(&wrong, scope).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get_token(&anon, "service=other").await.0, StatusCode::BAD_REQUEST);

    // Tokens at work.
    let alice = Client::with_authorization(&server.url, &format!("Bearer {alice_token}"));
    let bob = Client::with_authorization(&server.url, &format!("Bearer {bob_token}"));
    let (m1, _) = alice.push_image("team/app", "v1", 11).await;
    let (m2, _) = bob.push_image("team/app", "v2", 12).await;
    assert_eq!(
        alice.put_manifest("team/app", "v2", OCI_MANIFEST, &m1).await.status(),
        StatusCode::CREATED
    );
    // bob's token lacks overwrite and the policy would not give it: denied.
    assert_error(
        bob.put_manifest("team/app", "v1", OCI_MANIFEST, &m2).await,
        403,
        "DENIED",
    )
    .await;
    // alice's token lacks delete, which the policy would give: ask for a better token.
    let r = alice.delete("/v2/team/app/manifests/v2").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        www_authenticate(&r),
        format!("Bearer realm=\"{realm}\",service=\"berth\",scope=\"repository:team/app:delete\",error=\"insufficient_scope\"")
    );
    // An anonymous token where credentials are needed: 401, so the client can sign in.
    let anon_tok = Client::with_authorization(&server.url, &format!("Bearer {anon_token}"));
    assert_eq!(
        anon_tok.get("/v2/team/app/manifests/v1").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Garbage is an invalid token.
    let junk = Client::with_authorization(&server.url, "Bearer abc.def.ghi");
    let r = junk.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&r).ends_with(",error=\"invalid_token\""));

    // The public key is published, under the kid the tokens carry.
    let jwks = json_body(anon.get("/.well-known/jwks.json").await).await;
    let kid = jsonwebtoken::decode_header(&alice_token).unwrap().kid.unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
    assert_eq!(
        jsonwebtoken::decode_header(&alice_token).unwrap().alg,
        jsonwebtoken::Algorithm::ES256
    );

    // The OAuth2 form (containerd), with a refresh token, then a refresh.
    let form = |pairs: &[(&str, &str)]| {
        anon.req(Method::POST, "/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(pairs))
            .send()
    };
    let r = form(&[
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", "wonderland"),
        ("service", "berth"),
        ("scope", "repository:team/app:pull repository:public/app:pull"),
        ("client_id", "containerd"),
        ("access_type", "offline"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = json_body(r).await;
    assert_eq!(
        access_of(body["access_token"].as_str().unwrap()),
        ["repository:public/app:pull", "repository:team/app:pull"]
    );
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let r = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", "berth"),
        ("scope", "repository:team/app:pull,push"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = json_body(r).await;
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "alice");
    // A refresh token is not an access token.
    let as_access = Client::with_authorization(&server.url, &format!("Bearer {refresh}"));
    assert_eq!(as_access.get("/v2/").await.status(), StatusCode::UNAUTHORIZED);
    let r = form(&[("grant_type", "password"), ("username", "alice"), ("password", "x")])
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = form(&[("grant_type", "client_credentials")]).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A restart keeps the signing key: issued tokens stay valid.
    server.stop();
    let server = TestServer::start_with(&server_args(&args, &["--token", "--data", &data_path]));
    let alice = Client::with_authorization(&server.url, &format!("Bearer {alice_token}"));
    assert_eq!(alice.get("/v2/team/app/manifests/v1").await.status(), StatusCode::OK);

    // A changed password revokes refresh tokens.
    files.write_users(&[("alice", "changed"), ("bob", "bu1lder-pw")]);
    let anon = Client::new(&server.url);
    let mut revoked = false;
    for _ in 0..100 {
        let r = anon
            .req(Method::POST, "/token")
            .body(format!(
                "grant_type=refresh_token&refresh_token={refresh}&service=berth"
            ))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked, "the refresh token outlived the password");
}

#[tokio::test(flavor = "multi_thread")]
async fn external_issuer_tokens() {
    let issuer = TestIssuer::new("test-issuer", "registry.test");
    // A second key, known from a JWKS file by its kid only (Keycloak style).
    let other = TestIssuer::new("test-issuer", "registry.test");
    let jwks_path = issuer.dir.path().join("jwks.json");
    let jwks = serde_json::json!({"keys": [other.key.public.to_jwk_json("keycloak-key-1", "ES256")]});
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let trust = format!("{},{}", issuer.public_pem.display(), jwks_path.display());
    let server = TestServer::start_with(&[
        "--no-self-image",
        "--token-trust",
        &trust,
        "--token-realm",
        "https://auth.example/token",
        "--token-issuer",
        "test-issuer",
        "--token-service",
        "registry.test",
    ]);
    let anon = Client::new(&server.url);
    let r = anon.get("/v2/").await;
    assert_eq!(
        www_authenticate(&r),
        "Bearer realm=\"https://auth.example/token\",service=\"registry.test\""
    );
    let public = &issuer.key.public;
    // distribution v2's libtrust kid, and v3's JWK thumbprint.
    for (i, kid) in [public.libtrust_kid(), public.thumbprint()].iter().enumerate() {
        let repo = format!("ext/app{i}");
        let token = issuer.mint("ci", &[(&repo, &["pull", "push"])], kid, 300);
        let c = Client::with_authorization(&server.url, &format!("Bearer {token}"));
        let (m, _) = c.push_image(&repo, "v1", 20 + i as u64).await;
        let r = c.get(&format!("/v2/{repo}/manifests/v1")).await;
        assert_eq!(r.status(), StatusCode::OK, "kid {kid}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
        // push from an external issuer includes moving the tag.
        let (m2, _) = c.push_image(&repo, "v2", 40 + i as u64).await;
        assert_eq!(
            c.put_manifest(&repo, "v1", OCI_MANIFEST, &m2).await.status(),
            StatusCode::CREATED
        );
        // Outside the token's access: insufficient scope.
        let r = c.get("/v2/elsewhere/manifests/v1").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(www_authenticate(&r).contains("error=\"insufficient_scope\""));
    }
    // A JWKS key by its kid.
    let token = other.mint("ci", &[("ext/app0", &["pull"])], "keycloak-key-1", 300);
    let c = Client::with_authorization(&server.url, &format!("Bearer {token}"));
    assert_eq!(c.get("/v2/ext/app0/manifests/v1").await.status(), StatusCode::OK);
    // Refused: an unknown kid, an expired token, another audience, a stranger's key.
    let refused = |token: String| {
        let c = Client::with_authorization(&server.url, &format!("Bearer {token}"));
        async move {
            let r = c.get("/v2/ext/app0/manifests/v1").await;
            (r.status(), www_authenticate(&r))
        }
    };
    let kid = public.libtrust_kid();
    for (what, token) in [
        (
            "unknown kid",
            issuer.mint("ci", &[("ext/app0", &["pull"])], "AAAA:BBBB", 300),
        ),
        ("expired", issuer.mint("ci", &[("ext/app0", &["pull"])], &kid, -300)),
        (
            "other audience",
            TestIssuer {
                service: "elsewhere".into(),
                ..TestIssuer::new("test-issuer", "x")
            }
            .mint("ci", &[("ext/app0", &["pull"])], &kid, 300),
        ),
    ] {
        let (status, challenge) = refused(token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(challenge.ends_with("error=\"invalid_token\""), "{what}: {challenge}");
    }
}

/// The request log names the user, the action, the repository and the
/// decision, and never a password.
#[test]
fn request_log_shows_every_decision() {
    let files = AuthFiles::new(USERS, POLICY);
    let data = tempfile::tempdir().unwrap();
    let mut extra: Vec<String> = files.args();
    extra.push("--no-self-image".into());
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let berth = support::BerthProcess::spawn(data.path(), &extra);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bob = Client::with_authorization(&berth.url, &basic("bob", "bu1lder-pw"));
        let anon = Client::new(&berth.url);
        let wrong = Client::with_authorization(&berth.url, &basic("bob", "s3cret-guess"));
        bob.push_image("team/logged", "v1", 5).await;
        assert_eq!(
            anon.get("/v2/team/logged/manifests/v1").await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            bob.delete("/v2/team/logged/manifests/v1").await.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(wrong.get("/v2/").await.status(), StatusCode::UNAUTHORIZED);
    });
    let found =
        |f: &dyn Fn(&Value) -> bool| support::wait_until(Duration::from_secs(5), || berth.log_lines().iter().any(f));
    assert!(found(&|l: &Value| l["user"] == "bob"
        && l["action"] == "push"
        && l["repository"] == "team/logged"
        && l["access"].as_str().unwrap_or("").starts_with("allowed")));
    assert!(found(&|l: &Value| l["user"] == "-"
        && l["action"] == "pull"
        && l["status"] == 401
        && l["access"].as_str().unwrap_or("").starts_with("denied")));
    assert!(found(&|l: &Value| l["user"] == "bob"
        && l["action"] == "delete"
        && l["access"].as_str().unwrap_or("").contains("grant only pull,push")));
    // The failed login is logged with the user, without the password.
    assert!(found(
        &|l: &Value| l["message"].as_str() == Some("login failed") && l["user"] == "bob"
    ));
    let all = berth.log.lock().unwrap().join("\n");
    assert!(
        !all.contains("s3cret-guess") && !all.contains("bu1lder-pw"),
        "a password reached the log"
    );
}

/// Read-only sources obey the same rules as stored repositories (and stay read-only).
#[tokio::test(flavor = "multi_thread")]
async fn read_only_sources_follow_the_policy() {
    let files = AuthFiles::new(
        USERS,
        r#"
        default = []
        [[access]]
        repository = "mirror/**"
        users = { alice = ["pull", "push"] }
        "#,
    );
    let tmp = tempfile::tempdir().unwrap();
    let image = support::images::Image::runnable(&support::images::unique("auth-src"));
    let mut layout = support::images::OciLayout::create(&tmp.path().join("layout"));
    layout.add_image("v1", &image);
    let source = format!("mirror={}", tmp.path().join("layout").display());
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &["--source", &source]));
    let alice = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let bob = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));
    let anon = Client::new(&server.url);
    let path = "/v2/mirror/manifests/v1";
    let r = alice.get(path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), image.manifest.digest);
    assert_error(bob.get(path).await, 403, "DENIED").await;
    assert_eq!(anon.get(path).await.status(), StatusCode::UNAUTHORIZED);
    // The policy lets alice push, the source does not.
    assert_error(
        alice
            .req(Method::POST, "/v2/mirror/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        403,
        "DENIED",
    )
    .await;
    let listed = |v: Value| v["repositories"].as_array().unwrap().iter().any(|r| r == "mirror");
    assert!(listed(json_body(alice.get("/v2/_catalog").await).await));
    assert!(!listed(json_body(bob.get("/v2/_catalog").await).await));
}

/// An augmented name (`aug/<id>/<base>`) is read as its base: whoever may
/// pull the base may pull it, nobody else; defining an augmentation is for
/// administrators.
#[tokio::test(flavor = "multi_thread")]
async fn augmented_images_are_authorized_as_their_base() {
    let files = AuthFiles::new(
        USERS,
        r#"
        admins = ["alice"]
        default = []
        [[access]]
        repository = "team/**"
        users = { alice = ["pull", "push"], bob = ["pull"] }
        [[access]]
        repository = "secret/**"
        users = { alice = ["pull", "push"] }
        "#,
    );
    let args = files.args();
    let server = TestServer::start_with(&server_args(&args, &[]));
    let alice = Client::with_authorization(&server.url, &basic("alice", "wonderland"));
    let bob = Client::with_authorization(&server.url, &basic("bob", "bu1lder-pw"));
    let anon = Client::new(&server.url);
    alice.push_image("team/app", "v1", 31).await;
    alice.push_image("secret/app", "v1", 32).await;
    let define = |c: &Client| {
        c.req(Method::POST, "/berth/v1/augmentations")
            .header("content-type", "application/json")
            .body(r#"{"env": ["AUGMENTED=1"]}"#)
            .send()
    };
    assert_error(define(&bob).await.unwrap(), 403, "DENIED").await;
    assert_eq!(define(&anon).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = define(&alice).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = json_body(r).await["id"].as_str().unwrap().to_owned();
    let team = format!("/v2/aug/{id}/team/app/manifests/v1");
    let secret = format!("/v2/aug/{id}/secret/app/manifests/v1");
    assert_eq!(alice.get(&team).await.status(), StatusCode::OK);
    assert_eq!(alice.get(&secret).await.status(), StatusCode::OK);
    assert_eq!(bob.get(&team).await.status(), StatusCode::OK);
    assert_error(bob.get(&secret).await, 403, "DENIED").await;
    assert_eq!(anon.get(&team).await.status(), StatusCode::UNAUTHORIZED);
    // The policy lets alice push to team/**; the augmented name stays read-only.
    assert_error(
        alice
            .req(Method::POST, &format!("/v2/aug/{id}/team/app/blobs/uploads/"))
            .send()
            .await
            .unwrap(),
        403,
        "DENIED",
    )
    .await;
}
