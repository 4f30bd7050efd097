//! Pure types of the OCI Distribution Spec and the Docker Registry HTTP API V2.
//!
//! Nothing in this crate performs I/O: it parses and validates what crosses the
//! wire (digests, repository names, tags, manifests) and names the spec's error
//! codes. Every other berth crate builds on these types.

pub mod digest;
pub mod error_code;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod range;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use error_code::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind, Platform};
pub use name::{NameError, RepoName, Tag};
pub use reference::Reference;
