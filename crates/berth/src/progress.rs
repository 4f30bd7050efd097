//! Progress of `berth import` and `berth export` on a terminal: one line per
//! blob, rewritten in place. Quiet when stderr is not a terminal (scripts and
//! logs get only the results).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    last: Mutex<Option<Instant>>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last: Mutex::new(None),
        }
    }

    /// A line of its own, such as "writing sha256:... (12.3 MB)".
    pub fn note(&self, msg: &str) {
        if self.enabled {
            eprintln!("{msg}");
        }
    }

    /// Updates the current line; at most ten times a second, and always at the end.
    pub fn bytes(&self, label: &str, done: u64, total: u64) {
        self.line(label, &format!("{} / {}", human(done), human(total)), done >= total);
    }

    /// Like [`Progress::bytes`], for a count of things (a bar and a fraction).
    pub fn count(&self, label: &str, done: u64, total: u64) {
        const WIDTH: u64 = 30;
        let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH) as usize;
        let bar = format!("[{}{}]", "#".repeat(filled), " ".repeat(WIDTH as usize - filled));
        self.line(label, &format!("{bar} {done}/{total}"), done >= total);
    }

    fn line(&self, label: &str, state: &str, finished: bool) {
        if !self.enabled {
            return;
        }
        let mut last = self.last.lock().unwrap();
        let now = Instant::now();
        if !finished && last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(100)) {
            return;
        }
        *last = Some(now);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K  {label}  {state}");
        if finished {
            let _ = writeln!(err);
            *last = None;
        }
        let _ = err.flush();
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `sha256:0123456789ab` — enough of a digest to recognize it.
pub fn short(digest: &berth_spec::Digest) -> String {
    format!("{}:{}", digest.algorithm(), &digest.hex()[..12])
}

/// Logging for the one-shot commands: warnings only, plain text on stderr.
pub fn init_cli_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
