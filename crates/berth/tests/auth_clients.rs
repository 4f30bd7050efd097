//! Real clients against berth with authentication: docker (login, push,
//! pull) with the built-in token service, with htpasswd Basic only, and with
//! an external token issuer; podman login and pull; skopeo with --creds;
//! containerd's `ctr --user` (with a containerd of the test's own).
//! Fails (never skips) when a client is missing or dockerd is not running.
//!
//! Every docker and podman command gets a configuration directory of its own,
//! so logins never touch the machine's ~/.docker/config.json.

mod support;

use std::path::Path;
use support::auth::{AuthFiles, TestIssuer, TokenServer};
use support::images::{unique, Image, OciLayout};
use support::tools::{skopeo, skopeo_copy, tool, Output, Tool};
use support::TestServer;

const USERS: &[(&str, &str)] = &[("alice", "alice-pw-1"), ("bob", "bob-pw-2")];

/// Anonymous pull of public/**; alice pushes there and owns team/**; bob only pulls.
const POLICY: &str = r#"
default = ["pull"]

[[access]]
repository = "public/**"
anonymous = ["pull"]
users = { alice = ["push"] }

[[access]]
repository = "team/**"
users = { alice = ["push", "overwrite", "delete"] }
"#;

fn docker(config: &Path) -> Tool {
    tool("docker").arg("--config").arg(config.display().to_string())
}

fn login(config: &Path, host: &str, user: &str, password: &str) -> Output {
    docker(config).args(["login", "-u", user, "-p", password, host]).run()
}

/// Images put into the engine, removed when the test ends however it ends.
struct Engine {
    refs: Vec<String>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        for r in &self.refs {
            let _ = tool("docker").args(["rmi", "-f", r.as_str()]).run();
        }
    }
}

impl Engine {
    /// Loads a fresh runnable image into the engine as `local` (through
    /// skopeo, so no registry is involved and a push must upload it).
    fn load(&mut self, local: &str) -> Image {
        let image = Image::runnable(&unique("auth"));
        let tmp = tempfile::tempdir().unwrap();
        let mut layout = OciLayout::create(tmp.path());
        layout.add_image("img", &image);
        self.refs.push(local.to_owned());
        skopeo_copy(&layout.reference("img"), &format!("docker-daemon:{local}"), false);
        image
    }

    fn tag(&mut self, local: &str, remote: &str) {
        self.refs.push(remote.to_owned());
        tool("docker").args(["tag", local, remote]).ok();
    }
}

/// The digest in `docker push`'s last line (`<tag>: digest: sha256:... size: N`).
fn pushed_digest(out: &Output) -> String {
    out.stdout
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the push output: {}", out.describe()))
        .to_string()
}

fn remove(reference: &str) {
    let _ = tool("docker").args(["rmi", "-f", reference]).run();
}

fn says(out: &Output, what: &str) -> bool {
    out.stdout.to_lowercase().contains(what) || out.stderr.to_lowercase().contains(what)
}

/// The scenario every docker setup must pass: a wrong password is refused,
/// alice pushes and pulls, bob's push to a repository he may only pull is
/// denied, and an anonymous pull of the public prefix works (when `anonymous_pull`).
fn docker_scenario(server: &TestServer, anonymous_pull: bool) {
    let host = server.host();
    let cfg = || tempfile::tempdir().unwrap();
    let (alice, bob, anon) = (cfg(), cfg(), cfg());
    let mut engine = Engine { refs: Vec::new() };

    let wrong = login(alice.path(), &host, "alice", "not-her-password");
    assert!(!wrong.success(), "a wrong password logged in: {}", wrong.describe());
    assert!(says(&wrong, "unauthorized"), "{}", wrong.describe());
    let ok = login(alice.path(), &host, "alice", "alice-pw-1");
    assert!(ok.success() && says(&ok, "login succeeded"), "{}", ok.describe());
    assert!(login(bob.path(), &host, "bob", "bob-pw-2").success());

    let marker = unique("auth-docker");
    let local = format!("auth-local/{marker}:src");
    let image = engine.load(&local);
    let team = format!("{host}/team/{marker}:v1");
    let public = format!("{host}/public/{marker}:v1");
    engine.tag(&local, &team);
    engine.tag(&local, &public);
    let push = docker(alice.path()).args(["push", team.as_str()]).ok();
    assert!(says(&push, "pushed"), "{}", push.describe());
    let digest = pushed_digest(&push);
    docker(alice.path()).args(["push", public.as_str()]).ok();

    // bob may pull team/**, not push there: docker shows berth's denial.
    let bobs = format!("{host}/team/{marker}:bob");
    engine.tag(&local, &bobs);
    let denied = docker(bob.path()).args(["push", bobs.as_str()]).run();
    assert!(
        !denied.success(),
        "bob pushed to a pull-only repository: {}",
        denied.describe()
    );
    assert!(says(&denied, "denied"), "{}", denied.describe());

    // alice pulls back what she pushed.
    remove(&team);
    let pull = docker(alice.path()).args(["pull", team.as_str()]).ok();
    assert!(says(&pull, &format!("digest: {digest}")), "{}", pull.describe());
    let id = tool("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", team.as_str()])
        .ok();
    assert_eq!(
        id.stdout.trim(),
        image.config.digest,
        "the image id is its config's digest"
    );

    // Without logging in: the public prefix only.
    remove(&public);
    if anonymous_pull {
        docker(anon.path()).args(["pull", public.as_str()]).ok();
    }
    remove(&team);
    let anon_team = docker(anon.path()).args(["pull", team.as_str()]).run();
    assert!(
        !anon_team.success(),
        "anonymous pull of team/**: {}",
        anon_team.describe()
    );
}

/// A berth with the test's users and policy, and its token service.
fn token_server() -> (AuthFiles, TestServer) {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let server = TestServer::start_with(&support::auth::server_args(&args, &["--token"]));
    (files, server)
}

#[test]
fn docker_with_the_built_in_token_service() {
    let (_files, server) = token_server();
    docker_scenario(&server, true);

    // docker keeps the refresh token from login instead of the password, and
    // uses it (OAuth2 POST /token) for later pushes and pulls.
    let cfg = tempfile::tempdir().unwrap();
    assert!(login(cfg.path(), &server.host(), "alice", "alice-pw-1").success());
    let config = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
    assert!(
        config.contains("identitytoken"),
        "docker stored no identity token: {config}"
    );
    assert!(!config.contains("alice-pw-1"));
    let mut engine = Engine { refs: Vec::new() };
    let marker = unique("auth-refresh");
    let local = format!("auth-local/{marker}:src");
    engine.load(&local);
    let remote = format!("{}/team/{marker}:v1", server.host());
    engine.tag(&local, &remote);
    docker(cfg.path()).args(["push", remote.as_str()]).ok();
}

#[test]
fn docker_with_htpasswd_basic_only() {
    let files = AuthFiles::new(USERS, POLICY);
    let args = files.args();
    let mut argv = vec!["--no-self-image"];
    argv.extend(args.iter().map(String::as_str));
    let server = TestServer::start_with(&argv);
    // docker sends no request without credentials to a registry whose /v2/
    // asks for Basic ones, so an anonymous pull cannot work here (as with distribution).
    docker_scenario(&server, false);
}

#[test]
fn docker_with_an_external_token_issuer() {
    let issuer = TestIssuer::new("test-auth-service", "berth-ext");
    let public_pem = issuer.public_pem.display().to_string();
    // A distribution-v2-era issuer: tokens name the key by its libtrust kid.
    let kid = issuer.key.public.libtrust_kid();
    let keep_dir = tempfile::tempdir().unwrap();
    let pem_copy = keep_dir.path().join("issuer.pem");
    std::fs::copy(&public_pem, &pem_copy).unwrap();
    let tokens = TokenServer::start(issuer, USERS, kid);
    let pem = pem_copy.display().to_string();
    let server = TestServer::start_with(&[
        "--no-self-image",
        "--token-trust",
        &pem,
        "--token-realm",
        &tokens.url,
        "--token-issuer",
        "test-auth-service",
        "--token-service",
        "berth-ext",
    ]);
    let host = server.host();
    let cfg = tempfile::tempdir().unwrap();
    let mut engine = Engine { refs: Vec::new() };
    assert!(!login(cfg.path(), &host, "alice", "wrong").success());
    let ok = login(cfg.path(), &host, "alice", "alice-pw-1");
    assert!(ok.success(), "{}", ok.describe());
    let marker = unique("auth-ext");
    let local = format!("auth-local/{marker}:src");
    let image = engine.load(&local);
    let remote = format!("{host}/ext/{marker}:v1");
    engine.tag(&local, &remote);
    let digest = pushed_digest(&docker(cfg.path()).args(["push", remote.as_str()]).ok());
    remove(&remote);
    let pull = docker(cfg.path()).args(["pull", remote.as_str()]).ok();
    assert!(says(&pull, &format!("digest: {digest}")), "{}", pull.describe());
    let id = tool("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", remote.as_str()])
        .ok();
    assert_eq!(id.stdout.trim(), image.config.digest);
    assert!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

fn podman(state: &Path) -> Tool {
    let d = |sub: &str| state.join(sub).display().to_string();
    tool("podman")
        .args(["--root", &d("root"), "--runroot", &d("run"), "--tmpdir", &d("tmp")])
        .args([
            "--storage-driver=vfs",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
        ])
}

/// Pushes a fresh image to `remote` with skopeo and alice's credentials.
fn push_as_alice(remote: &str) -> Image {
    let image = Image::runnable(&unique("auth-skopeo"));
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(tmp.path());
    layout.add_image("img", &image);
    skopeo(["copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw-1"])
        .arg(layout.reference("img"))
        .arg(format!("docker://{remote}"))
        .ok();
    image
}

#[test]
fn podman_login_and_pull_with_the_token_service() {
    let (_files, server) = token_server();
    let host = server.host();
    let remote = format!("{host}/team/{}:v1", unique("podman"));
    let image = push_as_alice(&remote);

    let state = tempfile::tempdir().unwrap();
    let authfile = state.path().join("auth.json").display().to_string();
    let wrong = podman(state.path())
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            &authfile,
            "-u",
            "bob",
            "-p",
            "nope",
            &host,
        ])
        .run();
    assert!(!wrong.success(), "{}", wrong.describe());
    podman(state.path())
        .args([
            "login",
            "--tls-verify=false",
            "--authfile",
            &authfile,
            "-u",
            "bob",
            "-p",
            "bob-pw-2",
            &host,
        ])
        .ok();
    podman(state.path())
        .args(["pull", "--tls-verify=false", "--authfile", &authfile, &remote])
        .ok();
    let out = podman(state.path()).args(["image", "inspect", &remote]).ok();
    assert!(out.stdout.contains(&image.manifest.digest), "{}", out.describe());
    // Without the login, the pull is refused.
    let other = tempfile::tempdir().unwrap();
    let anon = podman(other.path())
        .args(["pull", "--tls-verify=false", "--authfile"])
        .arg(other.path().join("none.json").display().to_string())
        .arg(&remote)
        .run();
    assert!(!anon.success(), "{}", anon.describe());
}

/// With the token service, so that skopeo's anonymous read of the public
/// prefix works too (with Basic only, clients send nothing to a registry
/// whose /v2/ asks for credentials they do not have).
#[test]
fn skopeo_with_creds() {
    let (_files, server) = token_server();
    let host = server.host();
    let name = unique("skopeo");
    let team = format!("{host}/team/{name}:v1");
    let public = format!("{host}/public/{name}:v1");
    let image = push_as_alice(&team);
    push_as_alice(&public);

    let inspect = |creds: Option<&str>, reference: &str| {
        let mut t = skopeo(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(c) = creds {
            t = t.args(["--creds", c]);
        }
        t.arg(format!("docker://{reference}")).run()
    };
    let raw = inspect(Some("bob:bob-pw-2"), &team);
    assert!(raw.success(), "{}", raw.describe());
    assert_eq!(
        support::images::sha256_digest(raw.stdout.as_bytes()),
        image.manifest.digest
    );
    let wrong = inspect(Some("bob:wrong"), &team);
    assert!(!wrong.success() && says(&wrong, "unauthorized"), "{}", wrong.describe());
    assert!(!inspect(None, &team).success(), "anonymous read of team/**");
    assert!(inspect(None, &public).success(), "anonymous read of public/**");

    // bob's push is denied, with the registry's message.
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = OciLayout::create(tmp.path());
    layout.add_image("img", &Image::runnable(&unique("auth-bob")));
    let denied = skopeo(["copy", "--dest-tls-verify=false", "--dest-creds", "bob:bob-pw-2"])
        .arg(layout.reference("img"))
        .arg(format!("docker://{host}/team/{name}:bob"))
        .run();
    assert!(!denied.success(), "{}", denied.describe());
    assert!(says(&denied, "denied"), "{}", denied.describe());
}

/// containerd's `ctr images pull --user` through the built-in token service:
/// bob pulls team/**, a wrong password and no credentials are refused, the
/// public prefix needs none.
#[test]
fn ctr_pull_with_user() {
    let (_files, server) = token_server();
    let host = server.host();
    let name = unique("ctr");
    let team = format!("{host}/team/{name}:v1");
    let public = format!("{host}/public/{name}:v1");
    let image = push_as_alice(&team);
    let public_image = push_as_alice(&public);

    let containerd = support::containerd::Containerd::start();
    let pull = |user: Option<&str>, reference: &str| {
        let mut t = containerd.ctr(["images", "pull", "--plain-http", "--platform", "linux/amd64"]);
        if let Some(u) = user {
            t = t.args(["--user", u]);
        }
        t.arg(reference).run()
    };
    let wrong = pull(Some("bob:wrong"), &team);
    assert!(!wrong.success(), "{}", wrong.describe());
    let anonymous = pull(None, &team);
    assert!(!anonymous.success(), "{}", anonymous.describe());
    let ok = pull(Some("bob:bob-pw-2"), &team);
    assert!(ok.success(), "{}\n{}", ok.describe(), containerd.log());
    let public_pull = pull(None, &public);
    assert!(public_pull.success(), "{}", public_pull.describe());

    let listed = containerd.ctr(["images", "ls"]).ok();
    for (reference, image) in [(&team, &image), (&public, &public_image)] {
        let line = listed
            .stdout
            .lines()
            .find(|l| l.starts_with(reference.as_str()))
            .unwrap_or_else(|| panic!("{reference} not in ctr images ls: {}", listed.describe()));
        assert!(line.contains(&image.manifest.digest), "{line}");
    }
}
