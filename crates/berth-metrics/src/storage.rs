//! Metrics of storage operations, by operation: how many, how long, how many
//! failed (an absent object is an answer, not a failure).

use crate::Histogram;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    ops: Vec<Counter>,
    errors: Vec<Counter>,
    latency: Vec<Histogram>,
}

impl StorageMetrics {
    pub(crate) fn new(registry: &mut Registry) -> StorageMetrics {
        let ops_f = Family::<Labels, Counter>::default();
        let errors_f = Family::<Labels, Counter>::default();
        let latency_f = Family::<Labels, Histogram, _>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let label = |op: Op| [("operation", op.name())];
        let ops = Op::ALL.iter().map(|o| ops_f.get_or_create_owned(&label(*o))).collect();
        let errors = Op::ALL
            .iter()
            .map(|o| errors_f.get_or_create_owned(&label(*o)))
            .collect();
        let latency = Op::ALL
            .iter()
            .map(|o| latency_f.get_or_create_owned(&label(*o)))
            .collect();
        registry.register("storage_operations", "Storage operations, by operation", ops_f);
        registry.register(
            "storage_errors",
            "Storage operations that failed (not counting absent objects), by operation",
            errors_f,
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Time storage operations took, by operation",
            Unit::Seconds,
            latency_f,
        );
        StorageMetrics { ops, errors, latency }
    }

    /// One operation done; `failed` when it failed for another reason than absence.
    pub fn record(&self, op: Op, elapsed: Duration, failed: bool) {
        let i = op as usize;
        self.ops[i].inc();
        self.latency[i].observe(elapsed);
        if failed {
            self.errors[i].inc();
        }
    }

    /// Operations counted so far (for tests).
    pub fn count(&self, op: Op) -> u64 {
        self.ops[op as usize].get()
    }

    pub fn errors(&self, op: Op) -> u64 {
        self.errors[op as usize].get()
    }
}
