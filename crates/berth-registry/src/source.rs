//! Read-only image sources: images berth serves without storing them, such as
//! its own image and OCI layouts or archives given on the command line.

use crate::{BlobContent, ManifestContent, Result};
use async_trait::async_trait;
use berth_spec::range::ByteRange;
use berth_spec::{Descriptor, Digest, Reference, RepoName};

#[async_trait]
pub trait ImageSource: Send + Sync + 'static {
    /// Every repository at or below this name belongs to the source.
    fn prefix(&self) -> &str;

    /// Where the images come from, for messages ("berth's own executable", a path).
    fn describe(&self) -> String;

    /// The repositories this source serves.
    async fn repositories(&self) -> Result<Vec<RepoName>>;

    /// Tags of `name`, in any order; `NameUnknown` when the source has no such repository.
    async fn tags(&self, name: &RepoName) -> Result<Vec<String>>;

    /// `ManifestUnknown` when absent.
    async fn manifest(&self, name: &RepoName, reference: &Reference) -> Result<ManifestContent>;

    /// `BlobUnknown` when absent; `RangeNotSatisfiable` for a range outside the blob.
    async fn blob(&self, name: &RepoName, digest: &Digest, range: Option<ByteRange>) -> Result<BlobContent>;

    /// The manifests of `name` whose `subject` is `subject`, as the referrers
    /// API lists them, sorted by digest; empty when there are none (also for
    /// an unknown subject, as for pushed content).
    async fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>>;
}
