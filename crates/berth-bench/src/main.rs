//! `berth-bench`: load generator for container registries.

use anyhow::{bail, Context};
use berth_bench::client::Target;
use berth_bench::size;
use berth_bench::workload::{self, Config, Workload};
use clap::{Args, Parser, Subcommand};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "berth-bench",
    version,
    about = "Load generator for container registries (distribution API over HTTP/1.1)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one workload against a registry and report throughput, latency, errors and CPU.
    Run(RunArgs),
    /// Start a server command, report the time from exec to the first 200 on /v2/, leave it running.
    Startup(StartupArgs),
    /// Print a TCP port on 127.0.0.1 that is free right now.
    FreePort,
    /// Measure the disk: write a new file of incompressible bytes, fdatasync it, report MB/s
    /// (like `dd conv=fdatasync`, but with data a filesystem or host cannot compress).
    DiskWrite(DiskWriteArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Registry base URL, e.g. http://127.0.0.1:5000
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    workload: Workload,
    /// Repository name used for the workload.
    #[arg(long, default_value = "bench/load")]
    repo: String,
    /// Blob size, e.g. 1KiB, 10MiB, 1GiB (for manifest workloads: the layer size).
    #[arg(long, default_value = "1KiB", value_parser = size::parse)]
    size: u64,
    /// Chunk size of push-chunked.
    #[arg(long, default_value = "5MiB", value_parser = size::parse)]
    chunk_size: u64,
    /// Concurrent connections (one operation at a time on each).
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Operations to run (blobs to push; requests for pulls).
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Run for this many seconds (pulls); the run stops at whichever limit comes first.
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Distinct blobs a pull-blob run reads, round robin [default: 1 for blobs of
    /// 256 MiB or more, else min(concurrency, 16)].
    #[arg(long)]
    objects: Option<u64>,
    /// Seed of the generated contents [default: fresh per run for pushes, fixed per size for pulls].
    #[arg(long)]
    seed: Option<u64>,
    /// Send this `Authorization` header with every request (`Basic <base64>`,
    /// `Bearer <token>`), to measure a registry with authentication.
    #[arg(long, env = "BERTH_BENCH_AUTHORIZATION")]
    authorization: Option<String>,
    /// For an https:// URL: the CA certificates (PEM) to verify the server with.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Hash every pulled blob or manifest and check its digest (costs client CPU).
    #[arg(long)]
    verify: bool,
    /// pull-blob: let the kernel discard response bodies (recv with MSG_TRUNC)
    /// instead of copying them into the client, so that the client's CPU does
    /// not bound the measured rate. Bodies are counted, not seen.
    #[arg(long, conflicts_with = "verify")]
    discard: bool,
    /// Instead of pushing the pull data to the registry, write it as static files below this
    /// directory (v2/<repo>/blobs/<digest>, v2/<repo>/manifests/<digest|tag>) and exit.
    #[arg(long)]
    static_root: Option<PathBuf>,
    /// Only prepare the pull data, do not run the workload.
    #[arg(long)]
    setup_only: bool,
    /// Do not prepare the pull data: an earlier --setup-only (same --size, --seed, --objects) did.
    #[arg(long, conflicts_with_all = ["setup_only", "static_root"])]
    no_setup: bool,
    /// Before the timed run, pull every object once (untimed), so that a pull
    /// measures the page cache rather than the disk.
    #[arg(long)]
    warmup: bool,
    /// Server process(es) whose CPU time and RSS to measure during the run.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Seconds before one operation counts as failed.
    #[arg(long, default_value_t = 300.0)]
    timeout: f64,
    /// Worker threads of the client [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DiskWriteArgs {
    /// The file to create (removed afterwards); its directory decides the disk.
    #[arg(long)]
    path: PathBuf,
    #[arg(long, default_value = "1GiB", value_parser = size::parse)]
    size: u64,
    /// Write with O_DIRECT (bypassing the page cache, as berth does for big
    /// uploads) instead of through the page cache; fdatasync either way.
    #[arg(long)]
    direct: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StartupArgs {
    /// Base URL the server will listen on.
    #[arg(long)]
    url: String,
    /// Where to write the server's PID.
    #[arg(long)]
    pid_file: PathBuf,
    /// Where the server's stdout and stderr go.
    #[arg(long, default_value = "/dev/null")]
    log: PathBuf,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 20.0)]
    timeout: f64,
    #[arg(long)]
    json: bool,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    cmd: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args),
        Command::Startup(args) => startup(args),
        Command::DiskWrite(args) => disk_write(args),
        Command::FreePort => {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.enable_all().build()?;
    let objects = args.objects.unwrap_or(if args.size >= 256 << 20 {
        1
    } else {
        (args.concurrency as u64).clamp(1, 16)
    });
    if args.discard && args.workload != Workload::PullBlob {
        bail!("--discard is for pull-blob");
    }
    if args.workload == Workload::PushChunked && args.chunk_size == 0 {
        bail!("--chunk-size must be positive");
    }
    let cfg = Config {
        workload: args.workload,
        repo: args.repo.clone(),
        size: args.size,
        chunk_size: args.chunk_size,
        concurrency: args.concurrency,
        requests: args.requests,
        duration: args.duration.map(Duration::from_secs_f64),
        objects,
        seed: args
            .seed
            .unwrap_or_else(|| workload::default_seed(args.workload, args.size)),
        verify: args.verify,
        discard: args.discard,
        static_root: args.static_root.clone(),
        no_setup: args.no_setup,
        warmup: args.warmup,
        server_pids: args.server_pids.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
    };
    let report = rt.block_on(async {
        let mut target = Target::parse(&args.url).await?;
        target.trust(args.cacert.as_deref())?;
        if let Some(a) = &args.authorization {
            target.authorization = Some(a.parse().context("--authorization is not a valid header value")?);
        }
        let prepared = workload::prepare(&cfg, &target)
            .await
            .context("preparing the workload")?;
        if args.setup_only || args.static_root.is_some() {
            return Ok(None);
        }
        workload::run(cfg, &args.url, target, prepared).await.map(Some)
    })?;
    let Some(report) = report else { return Ok(()) };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.human());
    }
    if report.errors > 0 {
        std::process::exit(2);
    }
    Ok(())
}

fn disk_write(args: DiskWriteArgs) -> anyhow::Result<()> {
    use berth_bench::gen::BlobKey;
    // A 64 MiB pattern, generated before the clock starts and written repeatedly
    // in 1 MiB writes, as dd bs=1M would.
    let key = BlobKey {
        seed: workload::default_seed(Workload::PushMonolithic, args.size),
        index: 0,
        size: 64 << 20,
    };
    // Direct I/O wants page-aligned buffers: use the backing Vec from its first aligned byte.
    const ALIGN: usize = 4096;
    if args.direct && !args.size.is_multiple_of(ALIGN as u64) {
        anyhow::bail!("--direct needs a size that is a multiple of {ALIGN}");
    }
    let mut backing = vec![0u8; key.size as usize + ALIGN];
    let aligned = backing.as_ptr().align_offset(ALIGN);
    let pattern = &mut backing[aligned..aligned + key.size as usize];
    key.fill(0, pattern);
    let _ = std::fs::remove_file(&args.path);
    let start = Instant::now();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if args.direct {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_DIRECT);
    }
    let mut f = options
        .open(&args.path)
        .with_context(|| format!("creating {}", args.path.display()))?;
    let mut left = args.size;
    while left > 0 {
        for piece in pattern.chunks(1 << 20) {
            let n = (piece.len() as u64).min(left) as usize;
            f.write_all(&piece[..n])?;
            left -= n as u64;
            if left == 0 {
                break;
            }
        }
    }
    f.sync_data()?;
    drop(f);
    let secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&args.path)?;
    let mb_per_s = args.size as f64 / 1e6 / secs;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "bytes": args.size, "seconds": secs, "mb_per_s": mb_per_s })
        );
    } else {
        println!(
            "wrote {}{} with fdatasync in {secs:.3} s: {mb_per_s:.1} MB/s",
            size::human(args.size),
            if args.direct { " (O_DIRECT)" } else { "" }
        );
    }
    Ok(())
}

/// One GET /v2/ over a fresh connection; true on a 200.
fn probe(addr: SocketAddr, authority: &str, prefix: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET {prefix}/v2/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && (head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

fn startup(args: StartupArgs) -> anyhow::Result<()> {
    let target = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(Target::parse(&args.url))?;
    if probe(target.addr, target.authority.to_str()?, &target.prefix) {
        bail!("something already answers on {}", args.url);
    }
    let log = std::fs::File::create(&args.log).with_context(|| format!("creating {}", args.log.display()))?;
    let start = Instant::now();
    let child = Process::new(&args.cmd[0])
        .args(&args.cmd[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {:?}", args.cmd))?;
    let pid = child.id();
    std::fs::write(&args.pid_file, format!("{pid}\n"))?;
    let limit = Duration::from_secs_f64(args.timeout);
    loop {
        if probe(target.addr, target.authority.to_str()?, &target.prefix) {
            break;
        }
        if start.elapsed() > limit {
            bail!(
                "{} did not answer 200 on /v2/ within {limit:?} (pid {pid} left running)",
                args.cmd[0]
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if args.json {
        println!("{}", serde_json::json!({ "pid": pid, "startup_ms": ms }));
    } else {
        println!("pid {pid}: first 200 on /v2/ after {ms:.2} ms");
    }
    // The child keeps running after we exit: the caller stops it by PID.
    std::mem::forget(child);
    Ok(())
}
