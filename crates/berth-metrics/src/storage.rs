//! Metrics of storage operations, by operation: how many, how long, how many
//! failed (an absent object is an answer, not a failure).

use crate::sharded::{shard, CounterFamily, HistogramFamily};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

/// The operations of berth-storage's `Backend` trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Head,
    Open,
    Put,
    PutEphemeral,
    Delete,
    DeletePrefix,
    List,
    /// Opening an upload for appending.
    Append,
    /// Making appended data durable (the end of an upload's request).
    AppendFinish,
    Promote,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Get,
        Op::Head,
        Op::Open,
        Op::Put,
        Op::PutEphemeral,
        Op::Delete,
        Op::DeletePrefix,
        Op::List,
        Op::Append,
        Op::AppendFinish,
        Op::Promote,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Head => "head",
            Op::Open => "open",
            Op::Put => "put",
            Op::PutEphemeral => "put_ephemeral",
            Op::Delete => "delete",
            Op::DeletePrefix => "delete_prefix",
            Op::List => "list",
            Op::Append => "append",
            Op::AppendFinish => "append_finish",
            Op::Promote => "promote",
        }
    }
}

/// Storage latency buckets (seconds): page-cache reads are microseconds, a
/// durable write waits for a device flush.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = [(&'static str, &'static str); 1];

pub struct StorageMetrics {
    ops: CounterFamily<Labels>,
    errors: CounterFamily<Labels>,
    latency: HistogramFamily<Labels>,
}

impl StorageMetrics {
    pub(crate) fn new(registry: &mut Registry) -> StorageMetrics {
        let labels = || Op::ALL.iter().map(|op| [("operation", op.name())]).collect();
        let m = StorageMetrics {
            ops: CounterFamily::new(labels()),
            errors: CounterFamily::new(labels()),
            latency: HistogramFamily::new(LATENCY_BUCKETS, labels()),
        };
        registry.register("storage_operations", "Storage operations, by operation", m.ops.clone());
        registry.register(
            "storage_errors",
            "Storage operations that failed (not counting absent objects), by operation",
            m.errors.clone(),
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Time storage operations took, by operation",
            Unit::Seconds,
            m.latency.clone(),
        );
        m
    }

    /// One operation done; `failed` when it failed for another reason than absence.
    pub fn record(&self, op: Op, elapsed: Duration, failed: bool) {
        let (shard, i) = (shard(), op as usize);
        self.ops.inc_by(shard, i, 1);
        self.latency.observe(shard, i, elapsed);
        if failed {
            self.errors.inc_by(shard, i, 1);
        }
    }

    /// Operations counted so far (for tests).
    pub fn count(&self, op: Op) -> u64 {
        self.ops.get(op as usize)
    }

    pub fn errors(&self, op: Op) -> u64 {
        self.errors.get(op as usize)
    }
}
