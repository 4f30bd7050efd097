//! berth-bench: a load generator for container registries, in the spirit of
//! zot's `zb`. It speaks the distribution API over plain HTTP/1.1 to any
//! registry URL, so the same workload can be run against berth, CNCF
//! distribution, or a static file server holding the same bytes.

pub mod client;
pub mod discard;
pub mod gen;
pub mod proc;
pub mod size;
pub mod stats;
pub mod workload;
