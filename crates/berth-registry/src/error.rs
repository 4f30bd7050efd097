//! The registry domain's one error type. It says what went wrong in the
//! registry's terms; the HTTP layer alone decides codes and statuses.

use berth_spec::{Digest, DigestError, ManifestError, NameError, RepoName};
use berth_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob {0} is unknown to this repository")]
    BlobUnknown(Digest),
    #[error("upload {0} is unknown (finished, cancelled, expired or never started)")]
    UploadUnknown(String),
    #[error("upload is invalid: {0}")]
    UploadInvalid(String),
    /// A chunk that does not start where the upload ends.
    #[error("chunk starts at {got}, but the upload holds {offset} bytes")]
    UploadOutOfOrder { offset: u64, got: u64 },
    #[error("requested range is not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("digest mismatch: the client said {expected}, the content is {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid digest: {0}")]
    DigestInvalid(#[from] DigestError),
    #[error("invalid name or tag: {0}")]
    NameInvalid(#[from] NameError),
    #[error("size invalid: {0}")]
    SizeInvalid(String),
    #[error("manifest {0} is unknown to this repository")]
    ManifestUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("manifest references {0}, which is unknown to this repository")]
    ManifestBlobUnknown(Digest),
    /// A descriptor in a pushed manifest whose size is not that of its content.
    #[error("manifest invalid: the descriptor of {digest} gives size {declared}, but the content has {stored} bytes")]
    DescriptorSizeMismatch { digest: Digest, declared: u64, stored: u64 },
    #[error("repository {0} is unknown")]
    NameUnknown(RepoName),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unsupported(String),
    /// Something that runs one at a time is running elsewhere (garbage
    /// collection on another replica): try again later.
    #[error("{0}")]
    Busy(String),
    /// Reading the request body failed (the client went away or sent garbage).
    #[error("reading the request body failed: {0}")]
    Body(std::io::Error),
    /// An augmentation that cannot be defined, or a base image it cannot be
    /// applied to (an artifact, a config that is not JSON).
    #[error("{0}")]
    Augmentation(String),
    /// An upstream registry of the mirror could not give what was asked
    /// (down, failing, refusing berth, or sending wrong bytes).
    #[error("upstream registry: {0}")]
    Upstream(String),
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
