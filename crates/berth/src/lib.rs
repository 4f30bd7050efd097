//! The berth application: configuration and wiring of storage, registry and
//! HTTP. `main.rs` is a thin shell around it, and integration tests start the
//! same server in-process through [`app::start`].

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod describe;
pub mod export;
pub mod gc;
pub mod import;
pub mod memory;
pub mod migrate;
pub mod observability;
mod progress;
pub mod rules;
pub mod sbom;
pub mod storage;
