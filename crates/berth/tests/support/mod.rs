//! Shared helpers for integration tests: start berth in-process on an
//! ephemeral port, or run the real `berth` executable.
#![allow(dead_code)]

use berth::cli::{Command, ServeArgs};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A berth server running in this test process on 127.0.0.1:<ephemeral>.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub url: String,
    pub data: PathBuf,
    /// The S3 storage it serves (`s3://BUCKET/PREFIX`) and its engine, when on S3.
    pub s3: Option<(s3::S3Engine, String)>,
    /// Whether the S3 prefix is this server's own, to empty when it stops.
    owns_s3_prefix: bool,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts berth with a fresh data directory.
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    /// Starts berth with extra `serve` arguments (and a fresh data directory
    /// unless `--data` is among them). With `BERTH_TEST_STORAGE=s3` the data
    /// is kept on Ceph RGW instead, below a prefix of the bucket that only
    /// this server uses (see [`s3`]).
    pub fn start_with(extra: &[&str]) -> TestServer {
        let has_data = extra.contains(&"--data") || extra.contains(&"--storage");
        let s3 = if has_data {
            None
        } else {
            s3::S3Engine::for_test_storage().map(|engine| {
                let storage = engine.unique_storage();
                (engine, storage)
            })
        };
        let mut server = Self::start_in(s3.clone(), extra);
        server.owns_s3_prefix = s3.is_some();
        server
    }

    /// Starts berth on `storage` (`s3://BUCKET/PREFIX`) of `engine`, which
    /// another server may serve too (replicas); the prefix is left as it is
    /// when the server stops (see [`s3::S3Engine::remove`]).
    pub fn start_on_s3(engine: &s3::S3Engine, storage: &str, extra: &[&str]) -> TestServer {
        Self::start_in(Some((engine.clone(), storage.to_owned())), extra)
    }

    /// Starts berth on a fresh prefix of Ceph RGW's bucket, emptied when the
    /// server stops; `None` when Ceph is not configured (outside CI only:
    /// see [`s3::S3Engine::ceph`]).
    pub fn start_on_ceph(extra: &[&str]) -> Option<TestServer> {
        let engine = s3::S3Engine::ceph()?;
        let storage = engine.unique_storage();
        let mut server = Self::start_in(Some((engine, storage)), extra);
        server.owns_s3_prefix = true;
        Some(server)
    }

    fn start_in(s3: Option<(s3::S3Engine, String)>, extra: &[&str]) -> TestServer {
        let has_data = extra.contains(&"--data");
        let dir = (!has_data).then(|| tempfile::tempdir().expect("tempdir"));
        let mut argv: Vec<String> = vec!["berth".into(), "serve".into(), "--listen".into(), "127.0.0.1:0".into()];
        if let Some(d) = &dir {
            argv.push("--data".into());
            argv.push(d.path().display().to_string());
        }
        if let Some((engine, storage)) = &s3 {
            argv.extend(engine.serve_args(storage));
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        // Through the config file reader, so a `--config` brings its sections.
        let Command::Serve(mut args) = berth::config::parse_cli(&argv).expect("valid test arguments").0.command else {
            panic!("not a serve command")
        };
        args.s3.s3_credentials = s3.as_ref().map(|(engine, _)| engine.credentials());
        let data = args.data.clone();
        let mut server = Self::spawn(args, data, dir);
        server.s3 = s3;
        server
    }

    /// Starts berth with a config file holding `config` (for `[sections]`,
    /// which have no flags), a fresh data directory and extra arguments.
    pub fn start_with_config(config: &str, extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write_config(dir.path(), config);
        let data = dir.path().join("data");
        let mut argv: Vec<String> = vec!["berth".into(), "serve".into(), "--listen".into(), "127.0.0.1:0".into()];
        argv.extend(["--data".into(), data.display().to_string()]);
        argv.extend(["--config".into(), file.display().to_string()]);
        argv.extend(extra.iter().map(|s| s.to_string()));
        let (cli, _) = berth::config::parse_cli(&argv).expect("valid test configuration");
        let Command::Serve(args) = cli.command else {
            panic!("not a serve command")
        };
        Self::spawn(args, data, Some(dir))
    }

    fn spawn(args: ServeArgs, data: PathBuf, dir: Option<tempfile::TempDir>) -> TestServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let server = berth::app::start(listener, &args).await.expect("server starts");
                addr_tx.send(server.local_addr()).unwrap();
                server
                    .run(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("server runs");
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server reported its address");
        TestServer {
            addr,
            url: format!("http://{addr}"),
            data,
            s3: None,
            owns_s3_prefix: false,
            _dir: dir,
            shutdown: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, the registry host as docker/skopeo/podman spell it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server, letting in-flight requests finish.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let (true, Some((engine, storage))) = (std::mem::take(&mut self.owns_s3_prefix), &self.s3) {
            engine.remove(storage);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// The `berth` executable built for these tests.
pub fn berth_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berth"))
}

/// A `berth serve` child process on an ephemeral port; killed on drop.
pub struct BerthProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
    /// Every line berth wrote to stderr so far (JSON log lines).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl BerthProcess {
    /// Runs `berth serve --listen 127.0.0.1:0 --log-format json <extra>` and
    /// waits for the line that reports the bound address.
    pub fn spawn(data: &Path, extra: &[&str]) -> BerthProcess {
        Self::spawn_with(data, extra, |_| {})
    }

    /// Like [`BerthProcess::spawn`], with the command adjusted by `configure`
    /// before it starts (environment, resource limits).
    pub fn spawn_with(data: &Path, extra: &[&str], configure: impl FnOnce(&mut std::process::Command)) -> BerthProcess {
        let mut args: Vec<std::ffi::OsString> = ["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data"]
            .iter()
            .map(Into::into)
            .collect();
        args.push(data.into());
        args.extend(extra.iter().map(Into::into));
        Self::start(&args, configure)
    }

    /// Runs `berth <args>` as they are (which must make berth log JSON and
    /// listen on 127.0.0.1) and waits for the line that reports the bound address.
    pub fn spawn_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> BerthProcess {
        Self::start(args, |_| {})
    }

    fn start<S: AsRef<std::ffi::OsStr>>(
        args: &[S],
        configure: impl FnOnce(&mut std::process::Command),
    ) -> BerthProcess {
        use std::io::{BufRead, BufReader};
        let mut cmd = std::process::Command::new(berth_exe());
        cmd.args(args);
        configure(&mut cmd);
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("berth starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                keep.lock().unwrap().push(line.clone());
                if !sent {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if let Some(addr) = v.get("addr").and_then(|a| a.as_str()) {
                            let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
                            sent = true;
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth reported its address");
        BerthProcess {
            child,
            addr,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// The JSON log lines written so far, parsed (other lines are skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until a log line satisfies `f`, and returns it.
    pub fn wait_for_log(&self, timeout: Duration, f: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.log_lines().into_iter().find(|l| f(l));
            found.is_some()
        });
        found
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `berth <args>` as a [`tools::Tool`], to run to completion (`--check-config`,
/// a start that must fail).
pub fn berth_cli<I: IntoIterator<Item = S>, S: AsRef<str>>(args: I) -> tools::Tool {
    tools::tool(berth_exe().to_str().expect("a UTF-8 path")).args(args)
}

/// Writes a config file `berth.toml` holding `text` into `dir`.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("berth.toml");
    std::fs::write(&path, text).expect("writing the config file");
    path
}

/// The repository's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub mod admin;
pub mod auth;
pub mod browser;
pub mod compat;
pub mod containerd;
pub mod distribution;
pub mod docker;
pub mod images;
pub mod migrate;
pub mod s3;
pub mod skopeo_scenarios;
pub mod tls;
pub mod tools;
