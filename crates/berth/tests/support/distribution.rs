//! CNCF distribution 2.8.2 (Debian's `docker-registry`) as a real registry
//! beside berth: the compatibility tests share data directories with it, the
//! mirror tests use it as an upstream. Fails (never skips) when it is missing.

use super::s3::S3Engine;
use super::tools::http_get;
use super::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const DISTRIBUTION: &str = "/usr/bin/docker-registry";

/// A CNCF distribution process serving `root` on 127.0.0.1; killed on drop.
pub struct Distribution {
    child: Child,
    pub host: String,
    log: PathBuf,
    _conf_dir: tempfile::TempDir,
}

impl Distribution {
    pub fn start(root: &Path) -> Distribution {
        Self::start_with_htpasswd(root, None)
    }

    /// Like [`Distribution::start`], requiring the users of an htpasswd file
    /// (bcrypt) when one is given.
    pub fn start_with_htpasswd(root: &Path, htpasswd: Option<&Path>) -> Distribution {
        let storage = format!("  filesystem:\n    rootdirectory: {}\n", root.display());
        let auth = htpasswd
            .map(|p| format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", p.display()))
            .unwrap_or_default();
        Self::spawn(&storage, &auth, &[])
    }

    /// distribution with its `s3` storage driver on `storage`
    /// (`s3://BUCKET/PREFIX`) of `engine`: the prefix is its `rootdirectory`,
    /// so its keys are `PREFIX/docker/registry/v2/...`, where berth on the
    /// same `--storage` reads and writes.
    pub fn start_on_s3(engine: &S3Engine, storage: &str) -> Distribution {
        let rest = storage.strip_prefix("s3://").expect("an s3:// URL");
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // In 2.8 a `regionendpoint` also selects path-style addressing (what
        // Ceph RGW on an IP address needs); `secure` only concerns AWS's own
        // endpoints. Blob GETs are served by distribution itself (no redirect
        // to the store), so the tests read the bytes through the registry.
        let storage = format!(
            "  s3:\n    region: us-east-1\n    regionendpoint: {}\n    bucket: {bucket}\n    \
             rootdirectory: /{prefix}\n    v4auth: true\n    secure: false\n    chunksize: 5242880\n  \
             redirect:\n    disable: true\n",
            engine.endpoint
        );
        // The credentials go in its environment (distribution's overrides of
        // the configuration), never in the file or the test's output.
        let env = [
            ("REGISTRY_STORAGE_S3_ACCESSKEY", engine.access_key.as_str()),
            ("REGISTRY_STORAGE_S3_SECRETKEY", engine.secret_key.as_str()),
        ];
        Self::spawn(&storage, "", &env)
    }

    /// Runs distribution with `storage` (the driver's section of its
    /// configuration's `storage:`, indented), `auth` (a top-level section or
    /// nothing) and `env`.
    fn spawn(storage: &str, auth: &str, env: &[(&str, &str)]) -> Distribution {
        // distribution takes its address from its configuration, not from a
        // listener we could hand it: find a free port, release it, and let
        // distribution bind it straight away.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let host = format!("127.0.0.1:{port}");
        let conf_dir = tempfile::tempdir().unwrap();
        let conf = conf_dir.path().join("config.yml");
        // Upload purging stays off: it would scan (and could remove) the other
        // registry's uploads in the shared directory or bucket.
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n\
                 storage:\n{storage}  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: {host}\n{auth}"
            ),
        )
        .unwrap();
        let log = conf_dir.path().join("distribution.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(DISTRIBUTION);
        cmd.arg("serve")
            .arg(&conf)
            .env_remove("REGISTRY_HTTP_ADDR")
            .env_remove("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // aws-sdk-go (its s3 driver) loads AWS_CA_BUNDLE when it is set and
        // then refuses distribution's own HTTP transport at startup
        // ("LoadCustomCABundleError ... unsupported transport"); the engine
        // here is plain HTTP on 127.0.0.1, so no CA bundle is wanted.
        cmd.env_remove("AWS_CA_BUNDLE");
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {DISTRIBUTION} (package docker-registry; scripts/test.sh installs it): {e}")
        });
        let mut d = Distribution {
            child,
            host,
            log,
            _conf_dir: conf_dir,
        };
        let url = format!("http://{}/v2/", d.host);
        let up = wait_until(Duration::from_secs(30), || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("distribution exited with {status}: {}", d.log_text());
            }
            // 401 when it asks for credentials: up all the same.
            std::net::TcpStream::connect(&d.host).is_ok() && matches!(http_get(&url).0, 200 | 401)
        });
        assert!(up, "distribution did not answer on {url}: {}", d.log_text());
        d
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.kill();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.kill();
    }
}
