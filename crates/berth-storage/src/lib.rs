//! Storage for berth: a deliberately small backend trait in the spirit of
//! `object_store`, the filesystem backend, and the key layout shared by all
//! backends (compatible with CNCF distribution's filesystem driver).
//!
//! The trait knows nothing of registries: keys are opaque `/`-separated
//! strings, values are bytes. [`layout`] is the one place that says which key
//! holds what.

pub mod backend;
pub mod cached;
pub mod catalog_index;
pub mod fs;
pub mod instrumented;
pub mod layout;
mod mapping;
pub mod s3;

pub use backend::{AppendWriter, Backend, ByteStream, ObjectBody, ObjectMeta, StorageError};
pub use cached::Cached;
pub use catalog_index::CatalogIndexed;
pub use fs::{DataDirLock, FsBackend, LockError, SyncMode};
pub use instrumented::Instrumented;
pub use s3::{S3Backend, S3Config};
