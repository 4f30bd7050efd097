//! How a pass the server runs leaves the machine to requests: it works in
//! slices and, after each, rests as long as the slice took, so that it uses
//! at most about half of the CPU and disk it could take. Measured with
//! `bench/gc-push.sh`: passes run back to back flat out cost pushes about a
//! third of their throughput on a 2-core machine (see BENCHMARKS.md).
//! `berth gc`, which runs with no server, goes flat out.

use std::time::{Duration, Instant};

/// The work between two rests (a rest is as long as the work before it).
const SLICE: Duration = Duration::from_millis(20);

pub(crate) struct Pacer {
    on: bool,
    slice_start: Instant,
}

impl Pacer {
    pub(crate) fn new(on: bool) -> Pacer {
        Pacer {
            on,
            slice_start: Instant::now(),
        }
    }

    /// Called between units of work: rests once a slice is over.
    pub(crate) async fn breathe(&mut self) {
        if !self.on {
            return;
        }
        let worked = self.slice_start.elapsed();
        if worked >= SLICE {
            tokio::time::sleep(worked).await;
            self.slice_start = Instant::now();
        }
    }
}
