//! The workloads, their setup, the timed run and its report.

use crate::client::{drain, expect, location, with_query, Conn, ReqBody, Target};
use crate::discard::DiscardConn;
use crate::gen::{BlobKey, PIECE};
use crate::{proc, size, stats};
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::ValueEnum;
use http::{Method, StatusCode};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// POST an upload, then PUT the whole blob with ?digest= (one request body).
    PushMonolithic,
    /// POST, then PATCH chunks of --chunk-size with Content-Range, then PUT ?digest=.
    PushChunked,
    /// POST, then one PATCH with chunked transfer encoding (no length), then PUT ?digest=.
    PushStreamed,
    /// GET blobs by digest.
    PullBlob,
    /// HEAD blobs by digest (what a pusher asks before uploading a layer).
    HeadBlob,
    /// GET a manifest by digest.
    PullManifest,
    /// GET a manifest by tag (what a pull starts with).
    GetTag,
    /// HEAD a manifest by tag.
    HeadTag,
}

impl Workload {
    /// Workloads that read blobs (and set up `--objects` of them).
    pub fn is_blob_read(self) -> bool {
        matches!(self, Workload::PullBlob | Workload::HeadBlob)
    }

    pub fn is_push(self) -> bool {
        matches!(
            self,
            Workload::PushMonolithic | Workload::PushChunked | Workload::PushStreamed
        )
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub workload: Workload,
    pub repo: String,
    /// Blob size (for manifest workloads: the size of the one layer).
    pub size: u64,
    pub chunk_size: u64,
    pub concurrency: usize,
    /// Stop after this many operations (blobs pushed, requests for pulls).
    pub requests: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Distinct blobs to pull from (round robin).
    pub objects: u64,
    pub seed: u64,
    /// Hash pulled blobs and compare with their digest.
    pub verify: bool,
    /// Pull blobs with [`DiscardConn`]: bodies dropped in the kernel, not read.
    pub discard: bool,
    /// Write the pull data as static files below this directory instead of pushing it.
    pub static_root: Option<PathBuf>,
    /// The pull data is already there (an earlier `--setup-only` or `--static-root` run): only compute digests.
    pub no_setup: bool,
    /// Pull every object once, untimed, before the run (to measure the page cache, not the disk).
    pub warmup: bool,
    pub server_pids: Vec<u32>,
    pub timeout: Duration,
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const TAG: &str = "bench";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// What the timed phase works on.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Blobs to push: operation i pushes blob i.
    Push(Arc<Vec<(BlobKey, String)>>),
    /// Blobs to pull, round robin.
    Blobs(Arc<Vec<(BlobKey, String)>>),
    /// A manifest's digest and length.
    Manifest { digest: String, len: u64 },
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Digests of many blobs, computed on all cores.
fn digests(keys: Vec<BlobKey>) -> Vec<(BlobKey, String)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(keys.len().max(1));
    let per = keys.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(|k| (*k, k.digest())).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("digest thread"))
            .collect()
    })
}

/// Pushes one blob: POST, then the body as the workload says, then PUT ?digest=.
/// Returns the number of requests made.
pub async fn push_blob(
    conn: &mut Conn,
    target: &Target,
    repo: &str,
    how: Workload,
    chunk_size: u64,
    key: BlobKey,
    digest: &str,
) -> anyhow::Result<u64> {
    let resp = conn
        .send(
            Method::POST,
            &target.path(&format!("{repo}/blobs/uploads/")),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "starting an upload").await?;
    let mut loc = location(&resp)?;
    drain(resp, false).await?;
    let mut requests = 1;
    let gen = |pos: u64, end: u64, exact: bool| ReqBody::Gen { key, pos, end, exact };
    let octets = [("content-type", "application/octet-stream")];
    let last = match how {
        Workload::PushChunked => {
            let mut pos = 0;
            while pos < key.size {
                let end = (pos + chunk_size).min(key.size);
                let range = format!("{}-{}", pos, end - 1);
                let headers = [octets[0], ("content-range", range.as_str())];
                let resp = conn.send(Method::PATCH, &loc, &headers, gen(pos, end, true)).await?;
                let resp = expect(resp, StatusCode::ACCEPTED, "uploading a chunk").await?;
                loc = location(&resp)?;
                drain(resp, false).await?;
                requests += 1;
                pos = end;
            }
            ReqBody::Empty
        }
        Workload::PushStreamed => {
            let resp = conn.send(Method::PATCH, &loc, &octets, gen(0, key.size, false)).await?;
            let resp = expect(resp, StatusCode::ACCEPTED, "streaming the blob").await?;
            loc = location(&resp)?;
            drain(resp, false).await?;
            requests += 1;
            ReqBody::Empty
        }
        _ => gen(0, key.size, true),
    };
    let resp = conn
        .send(Method::PUT, &with_query(&loc, "digest", digest), &octets, last)
        .await?;
    let resp = expect(resp, StatusCode::CREATED, "finishing the upload").await?;
    drain(resp, false).await?;
    Ok(requests + 1)
}

async fn put_bytes(conn: &mut Conn, target: &Target, repo: &str, data: Bytes) -> anyhow::Result<String> {
    let digest = sha256(&data);
    let resp = conn
        .send(
            Method::POST,
            &target.path(&format!("{repo}/blobs/uploads/")),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let resp = expect(resp, StatusCode::ACCEPTED, "starting an upload").await?;
    let loc = location(&resp)?;
    drain(resp, false).await?;
    let resp = conn
        .send(
            Method::PUT,
            &with_query(&loc, "digest", &digest),
            &[],
            ReqBody::Full(Some(data)),
        )
        .await?;
    drain(expect(resp, StatusCode::CREATED, "pushing a blob").await?, false).await?;
    Ok(digest)
}

async fn blob_exists(conn: &mut Conn, target: &Target, repo: &str, digest: &str) -> anyhow::Result<bool> {
    let resp = conn
        .send(
            Method::HEAD,
            &target.path(&format!("{repo}/blobs/{digest}")),
            &[],
            ReqBody::Empty,
        )
        .await?;
    let ok = resp.status() == StatusCode::OK;
    drain(resp, false).await?;
    Ok(ok)
}

fn write_static(
    root: &Path,
    rel: &str,
    fill: impl Fn(&mut std::fs::File) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let mut f = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    fill(&mut f)?;
    Ok(())
}

fn write_blob_file(f: &mut std::fs::File, key: BlobKey) -> std::io::Result<()> {
    let mut buf = vec![0u8; PIECE];
    let mut off = 0;
    while off < key.size {
        let n = (key.size - off).min(PIECE as u64) as usize;
        key.fill(off, &mut buf[..n]);
        f.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

/// Creates what the workload needs: digests of the blobs to push, or the
/// blobs and manifest to pull (pushed to the registry, or written as files).
pub async fn prepare(cfg: &Config, target: &Target) -> anyhow::Result<Prepared> {
    let key = |index| BlobKey {
        seed: cfg.seed,
        index,
        size: cfg.size,
    };
    if cfg.workload.is_push() {
        let Some(n) = cfg.requests else {
            bail!("push workloads need --requests (the number of blobs to push)");
        };
        let keys = (0..n).map(key).collect();
        return Ok(Prepared::Push(Arc::new(
            tokio::task::spawn_blocking(move || digests(keys)).await?,
        )));
    }
    let objects = if cfg.workload.is_blob_read() {
        cfg.objects.max(1)
    } else {
        1
    };
    let keys: Vec<BlobKey> = (0..objects).map(key).collect();
    let blobs = tokio::task::spawn_blocking(move || digests(keys)).await?;
    let repo = &cfg.repo;
    let mut conn = match &cfg.static_root {
        Some(_) => None,
        None if cfg.no_setup => None,
        None => Some(Conn::connect(target).await?),
    };
    for (k, d) in &blobs {
        match (&cfg.static_root, conn.as_mut()) {
            (None, None) => {}
            (Some(root), _) => write_static(root, &format!("v2/{repo}/blobs/{d}"), |f| write_blob_file(f, *k))?,
            (None, Some(c)) => {
                if !blob_exists(c, target, repo, d).await? {
                    push_blob(c, target, repo, Workload::PushMonolithic, 0, *k, d).await?;
                }
            }
        }
    }
    if cfg.workload.is_blob_read() {
        return Ok(Prepared::Blobs(Arc::new(blobs)));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"berth-bench.seed":"{}"}}}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        cfg.seed, blobs[0].1
    );
    let config = Bytes::from(config);
    let config_digest = sha256(&config);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        config_digest,
        config.len(),
        blobs[0].1,
        cfg.size
    );
    let digest = sha256(manifest.as_bytes());
    let len = manifest.len() as u64;
    match (&cfg.static_root, conn.as_mut()) {
        (Some(root), _) => {
            write_static(root, &format!("v2/{repo}/blobs/{config_digest}"), |f| {
                f.write_all(&config)
            })?;
            for name in [digest.as_str(), TAG] {
                write_static(root, &format!("v2/{repo}/manifests/{name}"), |f| {
                    f.write_all(manifest.as_bytes())
                })?;
            }
        }
        (None, Some(c)) => {
            put_bytes(c, target, repo, config).await?;
            let resp = c
                .send(
                    Method::PUT,
                    &target.path(&format!("{repo}/manifests/{TAG}")),
                    &[("content-type", OCI_MANIFEST)],
                    ReqBody::Full(Some(Bytes::from(manifest))),
                )
                .await?;
            drain(expect(resp, StatusCode::CREATED, "pushing the manifest").await?, false).await?;
        }
        (None, None) => {}
    }
    Ok(Prepared::Manifest { digest, len })
}

/// Totals of one worker.
#[derive(Default)]
struct Tally {
    ops: u64,
    requests: u64,
    bytes: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    first_errors: Vec<String>,
}

/// One operation; returns (requests, bytes moved).
async fn one_op(
    conn: &mut Conn,
    cfg: &Config,
    target: &Target,
    prepared: &Prepared,
    idx: u64,
) -> anyhow::Result<(u64, u64)> {
    match prepared {
        Prepared::Push(blobs) => {
            let (key, digest) = &blobs[idx as usize];
            let reqs = push_blob(conn, target, &cfg.repo, cfg.workload, cfg.chunk_size, *key, digest).await?;
            Ok((reqs, key.size))
        }
        Prepared::Blobs(blobs) => {
            let (key, digest) = &blobs[(idx % blobs.len() as u64) as usize];
            let path = target.path(&format!("{}/blobs/{digest}", cfg.repo));
            if cfg.workload == Workload::HeadBlob {
                let resp = conn.send(Method::HEAD, &path, &[], ReqBody::Empty).await?;
                let resp = expect(resp, StatusCode::OK, "asking for a blob").await?;
                let announced = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                drain(resp, false).await?;
                if announced != Some(key.size) {
                    bail!(
                        "blob {digest}: HEAD announced {announced:?} bytes, expected {}",
                        key.size
                    );
                }
                return Ok((1, 0));
            }
            let resp = conn.send(Method::GET, &path, &[], ReqBody::Empty).await?;
            let resp = expect(resp, StatusCode::OK, "pulling a blob").await?;
            let (len, got) = drain(resp, cfg.verify).await?;
            if len != key.size {
                bail!("blob {digest}: got {len} bytes, expected {}", key.size);
            }
            if let Some(got) = got.filter(|g| g != digest) {
                bail!("blob {digest}: received bytes hash to {got}");
            }
            Ok((1, len))
        }
        Prepared::Manifest { digest, len } => {
            let head = cfg.workload == Workload::HeadTag;
            let (method, reference) = match cfg.workload {
                Workload::HeadTag => (Method::HEAD, TAG),
                Workload::GetTag => (Method::GET, TAG),
                _ => (Method::GET, digest.as_str()),
            };
            let path = target.path(&format!("{}/manifests/{reference}", cfg.repo));
            let resp = conn
                .send(method, &path, &[("accept", ACCEPT_MANIFESTS)], ReqBody::Empty)
                .await?;
            let resp = expect(resp, StatusCode::OK, "fetching the manifest").await?;
            let (got_len, got) = drain(resp, cfg.verify && !head).await?;
            if !head && got_len != *len {
                bail!("manifest {digest}: got {got_len} bytes, expected {len}");
            }
            if let Some(got) = got.filter(|g| g != digest) {
                bail!("manifest {digest}: received bytes hash to {got}");
            }
            Ok((1, got_len))
        }
    }
}

/// One blob GET whose body the kernel discards (`--discard`).
async fn pull_discarding(
    conn: &mut DiscardConn,
    cfg: &Config,
    target: &Target,
    prepared: &Prepared,
    idx: u64,
) -> anyhow::Result<(u64, u64)> {
    let Prepared::Blobs(blobs) = prepared else {
        bail!("--discard is for pull-blob");
    };
    let (key, digest) = &blobs[(idx % blobs.len() as u64) as usize];
    let r = conn.get(&target.path(&format!("{}/blobs/{digest}", cfg.repo))).await?;
    if r.status != 200 {
        bail!("pulling a blob: expected 200, got {}", r.status);
    }
    if r.body_len != key.size {
        bail!("blob {digest}: got {} bytes, expected {}", r.body_len, key.size);
    }
    Ok((1, r.body_len))
}

async fn worker(
    cfg: Arc<Config>,
    target: Arc<Target>,
    prepared: Prepared,
    next: Arc<AtomicU64>,
    deadline: Option<Instant>,
) -> Tally {
    let mut t = Tally::default();
    let mut conn: Option<Conn> = None;
    let mut discarding: Option<DiscardConn> = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let idx = next.fetch_add(1, Ordering::Relaxed);
        if cfg.requests.is_some_and(|n| idx >= n) {
            break;
        }
        let start = Instant::now();
        let result = tokio::time::timeout(cfg.timeout, async {
            if cfg.discard {
                let c = match discarding.take().filter(DiscardConn::is_usable) {
                    Some(c) => discarding.insert(c),
                    None => discarding.insert(DiscardConn::connect(&target).await?),
                };
                return pull_discarding(c, &cfg, &target, &prepared, idx).await;
            }
            let c = match conn.take().filter(Conn::is_usable) {
                Some(c) => conn.insert(c),
                None => conn.insert(Conn::connect(&target).await?),
            };
            one_op(c, &cfg, &target, &prepared, idx).await
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {:?}", cfg.timeout)));
        t.latencies_us.push(start.elapsed().as_micros() as u64);
        match result {
            Ok((reqs, bytes)) => {
                t.ops += 1;
                t.requests += reqs;
                t.bytes += bytes;
            }
            Err(e) => {
                t.errors += 1;
                if t.first_errors.len() < 3 {
                    t.first_errors.push(format!("{e:#}"));
                }
                // The connection may be mid-message: start over on a new one.
                conn = None;
                discarding = None;
            }
        }
    }
    t
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerUsage {
    pub pids: Vec<u32>,
    pub cpu_s: f64,
    /// Server CPU seconds per GB (10^9 bytes) moved.
    pub cpu_s_per_gb: Option<f64>,
    pub rss_start_kib: u64,
    /// Highest sampled sum of VmRSS during the run (sampled every 10 ms).
    pub rss_peak_kib: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub url: String,
    pub size: u64,
    pub size_human: String,
    pub chunk_size: Option<u64>,
    pub concurrency: usize,
    /// Bodies were discarded in the kernel (`--discard`), not read by the client.
    pub discard: bool,
    pub ops: u64,
    pub requests: u64,
    pub errors: u64,
    pub bytes: u64,
    pub duration_s: f64,
    /// 10^6 bytes per second.
    pub mb_per_s: f64,
    pub ops_per_s: f64,
    pub requests_per_s: f64,
    /// Per operation (a whole blob push, or one pull request).
    pub latency: stats::Latency,
    pub client_cpu_s: f64,
    /// Client CPU as a share of one core over the run (1.0 = one core busy).
    pub client_cpu_cores: f64,
    pub server: Option<ServerUsage>,
    pub first_errors: Vec<String>,
}

fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| proc::pid_status_kib(p, "VmRSS")).sum()
}

fn cpu_sum(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| proc::pid_cpu_secs(p)).sum()
}

/// Runs the timed phase.
pub async fn run(cfg: Config, url: &str, target: Target, prepared: Prepared) -> anyhow::Result<Report> {
    if cfg.requests.is_none() && cfg.duration.is_none() {
        bail!("give --requests or --duration");
    }
    if cfg.warmup && !cfg.workload.is_push() {
        let n = match &prepared {
            Prepared::Blobs(b) => b.len() as u64,
            _ => 1,
        };
        let mut conn = Conn::connect(&target).await?;
        for idx in 0..n {
            one_op(&mut conn, &cfg, &target, &prepared, idx)
                .await
                .context("warming up")?;
        }
    }
    let cfg = Arc::new(cfg);
    let target = Arc::new(target);
    let pids = cfg.server_pids.clone();
    let rss_start = rss_sum(&pids);
    let peak = Arc::new(AtomicU64::new(rss_start));
    let sampler = (!pids.is_empty()).then(|| {
        let (pids, peak) = (pids.clone(), peak.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                peak.fetch_max(rss_sum(&pids), Ordering::Relaxed);
            }
        })
    });
    let server_cpu0 = cpu_sum(&pids);
    let cpu0 = proc::own_cpu();
    let start = Instant::now();
    let deadline = cfg.duration.map(|d| start + d);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..cfg.concurrency.max(1))
        .map(|_| {
            tokio::spawn(worker(
                cfg.clone(),
                target.clone(),
                prepared.clone(),
                next.clone(),
                deadline,
            ))
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await?;
        total.ops += t.ops;
        total.requests += t.requests;
        total.bytes += t.bytes;
        total.errors += t.errors;
        total.latencies_us.extend(t.latencies_us);
        for e in t.first_errors {
            if total.first_errors.len() < 5 && !total.first_errors.contains(&e) {
                total.first_errors.push(e);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client_cpu = (proc::own_cpu() - cpu0).as_secs_f64();
    let server = (!pids.is_empty()).then(|| {
        peak.fetch_max(rss_sum(&pids), Ordering::Relaxed);
        let cpu_s = cpu_sum(&pids) - server_cpu0;
        ServerUsage {
            pids: pids.clone(),
            cpu_s,
            cpu_s_per_gb: (total.bytes >= 1_000_000).then(|| cpu_s / (total.bytes as f64 / 1e9)),
            rss_start_kib: rss_start,
            rss_peak_kib: peak.load(Ordering::Relaxed),
        }
    });
    if let Some(s) = sampler {
        s.abort();
    }
    Ok(Report {
        workload: cfg.workload,
        url: url.to_owned(),
        size: cfg.size,
        size_human: size::human(cfg.size),
        chunk_size: (cfg.workload == Workload::PushChunked).then_some(cfg.chunk_size),
        concurrency: cfg.concurrency,
        discard: cfg.discard,
        ops: total.ops,
        requests: total.requests,
        errors: total.errors,
        bytes: total.bytes,
        duration_s: elapsed,
        mb_per_s: total.bytes as f64 / 1e6 / elapsed,
        ops_per_s: total.ops as f64 / elapsed,
        requests_per_s: total.requests as f64 / elapsed,
        latency: stats::latency(&mut total.latencies_us),
        client_cpu_s: client_cpu,
        client_cpu_cores: client_cpu / elapsed,
        server,
        first_errors: total.first_errors,
    })
}

impl Report {
    pub fn human(&self) -> String {
        let mut s = String::new();
        let chunk = self
            .chunk_size
            .map(|c| format!(" chunk={}", size::human(c)))
            .unwrap_or_default();
        let w = serde_json::to_value(self.workload).ok();
        let name = w.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        let discard = if self.discard { " (bodies discarded)" } else { "" };
        s += &format!(
            "{name} size={}{chunk} concurrency={} against {}{discard}\n",
            self.size_human, self.concurrency, self.url
        );
        s += &format!(
            "  ops        {} in {:.2} s: {:.1} ops/s, {:.1} requests/s\n",
            self.ops, self.duration_s, self.ops_per_s, self.requests_per_s
        );
        s += &format!("  throughput {:.1} MB/s ({} bytes)\n", self.mb_per_s, self.bytes);
        let l = &self.latency;
        s += &format!(
            "  latency    p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, mean {:.3} ms\n",
            l.p50_ms, l.p99_ms, l.max_ms, l.mean_ms
        );
        s += &format!("  errors     {}\n", self.errors);
        for e in &self.first_errors {
            s += &format!("    {e}\n");
        }
        s += &format!(
            "  client CPU {:.2} s ({:.2} cores)\n",
            self.client_cpu_s, self.client_cpu_cores
        );
        if let Some(sv) = &self.server {
            let per_gb = sv.cpu_s_per_gb.map(|v| format!(", {v:.3} s/GB")).unwrap_or_default();
            s += &format!(
                "  server     CPU {:.2} s{per_gb}; RSS {:.1} MiB at start, {:.1} MiB peak\n",
                sv.cpu_s,
                sv.rss_start_kib as f64 / 1024.0,
                sv.rss_peak_kib as f64 / 1024.0
            );
        }
        s
    }
}

/// The content seed when none is given.
pub fn default_seed(workload: Workload, size: u64) -> u64 {
    if workload.is_push() {
        // Fresh bytes on every run, so a registry cannot skip a blob it already has.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    } else {
        // Pull data is stable, so repeated runs reuse what an earlier run pushed.
        0x6265_7274_6800_0000 ^ size
    }
}
