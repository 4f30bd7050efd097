//! Runs the real clients (docker, skopeo, podman, distribution) from tests: a
//! missing tool fails the test (it never skips), every run has a time limit,
//! and a failure shows the command line, exit status, stdout and stderr.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub line: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line, self.status, self.stdout, self.stderr
        )
    }
}

/// A command line to run; see [`tool`].
pub struct Tool {
    cmd: Command,
    line: String,
    timeout: Duration,
}

/// Starts a command line for `program` with a 5-minute limit.
pub fn tool(program: &str) -> Tool {
    Tool {
        cmd: Command::new(program),
        line: program.to_string(),
        timeout: Duration::from_secs(300),
    }
}

impl Tool {
    pub fn arg(mut self, a: impl AsRef<str>) -> Tool {
        self.line.push(' ');
        self.line.push_str(a.as_ref());
        self.cmd.arg(a.as_ref());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Tool {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Tool {
        self.cmd.env(k, v);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Tool {
        self.timeout = t;
        self
    }

    /// Runs to completion (or kills it at the time limit and panics).
    pub fn run(mut self) -> Output {
        let program = self.cmd.get_program().to_string_lossy().into_owned();
        let mut child = match self
            .cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!(
                    "`{program}` is not installed (scripts/test.sh installs it): cannot run `{}`",
                    self.line
                )
            }
            Err(e) => panic!("cannot run `{}`: {e}", self.line),
        };
        let read = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = read(Box::new(child.stdout.take().unwrap()));
        let err = read(Box::new(child.stderr.take().unwrap()));
        let end = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait().expect("waiting for a child") {
                Some(s) => break s,
                None if Instant::now() >= end => {
                    let _ = child.kill();
                    let status = child.wait().expect("waiting for a killed child");
                    let o = Output {
                        line: self.line.clone(),
                        status,
                        stdout: out.join().unwrap_or_default(),
                        stderr: err.join().unwrap_or_default(),
                    };
                    panic!("timed out after {:?}: {}", self.timeout, o.describe());
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Output {
            line: self.line,
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        }
    }

    /// Runs and panics unless it exits 0.
    pub fn ok(self) -> Output {
        let o = self.run();
        assert!(o.success(), "{}", o.describe());
        o
    }

    /// Runs and panics if it exits 0.
    pub fn fails(self) -> Output {
        let o = self.run();
        assert!(!o.success(), "expected a failure: {}", o.describe());
        o
    }
}

/// `skopeo --insecure-policy <args>`: the tests sign nothing, and this keeps
/// them independent of /etc/containers/policy.json.
pub fn skopeo<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> Tool {
    tool("skopeo").arg("--insecure-policy").args(args)
}

/// `skopeo copy` of `src` to `dst` over plain HTTP; `--all` copies every image of an index.
pub fn skopeo_copy(src: &str, dst: &str, all: bool) -> Output {
    let mut t = skopeo(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"]);
    if all {
        t = t.arg("--all");
    }
    t.arg(src).arg(dst).ok()
}

/// The raw manifest bytes of `docker://<image>` as skopeo fetches them.
pub fn skopeo_raw(image: &str) -> Vec<u8> {
    skopeo(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{image}"))
        .ok()
        .stdout
        .into_bytes()
}

/// Blocking GET of `url` (manifests of every kind accepted): (status, body).
/// Uploads `bytes` as a blob of `repo` in one POST (from an async test);
/// returns its digest.
pub async fn post_blob(client: &reqwest::Client, base: &str, repo: &str, bytes: Vec<u8>) -> String {
    let digest = super::images::sha256_digest(&bytes);
    let r = client
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    digest
}

pub fn http_get(url: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let accept = [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
        .join(", ");
        let resp = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap_or_else(|e| panic!("GET {url} body: {e}"));
        (status, body.to_vec())
    })
}

/// berth in this process for the client tests, without its self image: packaging
/// this (large, debug) test executable as an image would only cost time here,
/// and the compatibility tests compare catalogs with distribution's.
pub fn berth(extra: &[&str]) -> super::TestServer {
    let mut args = vec!["--no-self-image"];
    args.extend_from_slice(extra);
    super::TestServer::start_with(&args)
}
