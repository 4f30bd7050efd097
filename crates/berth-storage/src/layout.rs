//! Where everything lives: the one place that maps registry concepts to keys.
//!
//! The keys under `docker/registry/v2/` are those of CNCF distribution's
//! filesystem driver (its `paths.go`), so a `registry:2` data directory is
//! served as it is, and the reverse:
//!
//! ```text
//! docker/registry/v2/
//!   blobs/<alg>/<hex[0..2]>/<hex>/data                      the bytes of every blob and manifest, once
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                              "<alg>:<hex>": the blob is in this repository
//!     _manifests/revisions/<alg>/<hex>/link                 the manifest is in this repository
//!     _manifests/tags/<tag>/current/link                    the digest the tag points at
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link          every digest the tag has pointed at
//!     _uploads/<uuid>                                       bytes of an upload in progress (berth)
//!     _uploads/<uuid>/data, startedat                       the same in distribution's layout (purged, not resumed)
//! ```
//!
//! Uploads in progress are the one place berth departs from distribution: a
//! session is a single file, created by the POST, whose modification time is
//! the upload's last activity, and which a finished upload renames into the
//! blob store. A push thus creates and deletes no other file or directory, so
//! nothing is freed: freed inodes make allocation slow on ext4 without a journal
//! (it skips every inode freed in the last 30 s), which took 27% of the CPU of
//! small pushes with distribution's directory-per-upload. Uploads interrupted by
//! a switch between distribution and berth are not resumed, only purged.
//!
//! What berth keeps beyond that lives under `berth/v1/`, which distribution
//! never reads:
//!
//! ```text
//! berth/v1/
//!   repositories/<name>/_referrers/<alg>/<subject hex>/<alg>-<hex>   descriptor (JSON) of a manifest whose subject is <subject>
//!   self-image/<alg>-<hex of the executable>/<file>                 the cached self image of one berth executable
//!   trash/<uuid>/                                                    a tree the filesystem backend is deleting
//!   serve.lock                                                       flock'ed by the one `berth serve` of a data directory; holds its PID
//!   external-writes                                                  rewritten by `berth import` after it writes into a served directory
//!   gc/lease                                                         storage others write (S3): the one collector's lease (holder, epoch)
//!   gc/clock/<id>                                                    written and read back by a collector for the store's own time
//!   gc/pins/<alg>/<hex>/<id>                                         a reference to the digest was being added at the object's time
//!   gc/claims/<alg>-<hex>                                            the collector is deleting the digest (or a link to it)
//! ```
//!
//! Repository names are validated by [`RepoName`], so they cannot contain
//! `..`, empty components or characters that would escape their directory.

use berth_spec::{Digest, RepoName, Tag};

pub const ROOT: &str = "docker/registry/v2";
pub const BERTH_ROOT: &str = "berth/v1";

/// Where the filesystem backend moves a tree it deletes, so that the delete
/// is one atomic rename for everyone else (see `FsBackend::delete_prefix`).
/// Whatever a crash leaves there is garbage, removed when the server starts.
pub const FS_TRASH: &str = "berth/v1/trash";

/// Where the filesystem backend writes a file before renaming it into place
/// (same filesystem, so the rename is atomic). In one directory so that
/// sweeping what crashes left costs a listing of it, not a walk of the data.
pub const FS_TEMP: &str = "berth/v1/tmp";

/// Written once a start-up walk of the whole data directory found no
/// temporary file (`.tmp-*`) left beside its target, where berth before
/// `FS_TEMP` wrote them: later starts skip the walk.
pub const FS_SCATTERED_TEMP_SWEPT: &str = "berth/v1/scattered-temp-swept";

/// The file a filesystem data directory's server holds an exclusive lock
/// on (see `fs::DataDirLock`), with the holder's PID as its content.
pub const FS_SERVE_LOCK: &str = "berth/v1/serve.lock";

/// Rewritten (with new content each time) by a process that writes into a
/// data directory it does not serve, `berth import`: the server watches it and
/// forgets what it cached of the directory when it changes (see `cached`).
pub const FS_EXTERNAL_WRITES: &str = "berth/v1/external-writes";

/// Whether a server that is the only writer of its storage may remember the
/// answer of reading `key`: the links (tags, repository membership) and the
/// blobs' data, which change only by a put, promote or delete of the key
/// itself. Not uploads in progress, which grow by appends.
pub fn is_cacheable(key: &str) -> bool {
    let Some(rest) = key.strip_prefix(ROOT) else {
        return false;
    };
    (rest.starts_with("/repositories/") && rest.ends_with("/link"))
        || (rest.starts_with("/blobs/") && rest.ends_with("/data"))
}

pub fn blob_data(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{ROOT}/blobs/{}/{}/{hex}/data", digest.algorithm(), &hex[..2])
}

/// The blob store: `<alg>/<hex[0..2]>/<hex>/data` below it.
pub fn blobs_root() -> String {
    format!("{ROOT}/blobs")
}

/// The directory of one blob (its `data` and nothing else).
pub fn blob_dir(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{ROOT}/blobs/{}/{}/{hex}", digest.algorithm(), &hex[..2])
}

pub fn repositories_root() -> String {
    format!("{ROOT}/repositories")
}

pub fn repository(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}")
}

/// The link content distribution writes: the digest as text, no newline.
pub fn link_content(digest: &Digest) -> String {
    digest.to_string()
}

pub fn layer_link(name: &RepoName, digest: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_layers/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    )
}

/// `<alg>/<hex>/link` below it: the blobs pushed or mounted into `name`.
pub fn layers_dir(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_layers")
}

/// `<alg>/<hex>/link` below it: the manifests stored in `name`.
pub fn revisions_dir(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/revisions")
}

pub fn manifests_dir(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests")
}

pub fn manifest_revision_link(name: &RepoName, digest: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_manifests/revisions/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    )
}

pub fn tags_dir(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags")
}

pub fn tag_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}")
}

pub fn tag_current_link(name: &RepoName, tag: &Tag) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}/current/link")
}

/// `<alg>/<hex>/link` below it: every digest the tag has pointed at.
pub fn tag_index_dir(name: &RepoName, tag: &Tag) -> String {
    format!("{ROOT}/repositories/{name}/_manifests/tags/{tag}/index")
}

pub fn tag_index_link(name: &RepoName, tag: &Tag, digest: &Digest) -> String {
    format!(
        "{ROOT}/repositories/{name}/_manifests/tags/{tag}/index/{}/{}/link",
        digest.algorithm(),
        digest.hex()
    )
}

pub fn uploads_dir(name: &RepoName) -> String {
    format!("{ROOT}/repositories/{name}/_uploads")
}

/// The bytes of an upload in progress; the file exists from the POST on.
pub fn upload_data(name: &RepoName, id: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads/{id}")
}

/// The start time of an upload in distribution's layout, where `upload_data`
/// is a directory; read only to purge such uploads once they are stale.
pub fn legacy_upload_started_at(name: &RepoName, id: &str) -> String {
    format!("{ROOT}/repositories/{name}/_uploads/{id}/startedat")
}

/// `<alg>/<subject hex>/` below it: every subject of `name` that has referrers.
pub fn referrers_root(name: &RepoName) -> String {
    format!("{BERTH_ROOT}/repositories/{name}/_referrers")
}

pub fn referrers_dir(name: &RepoName, subject: &Digest) -> String {
    format!(
        "{BERTH_ROOT}/repositories/{name}/_referrers/{}/{}",
        subject.algorithm(),
        subject.hex()
    )
}

pub fn referrer_entry(name: &RepoName, subject: &Digest, referrer: &Digest) -> String {
    format!(
        "{}/{}-{}",
        referrers_dir(name, subject),
        referrer.algorithm(),
        referrer.hex()
    )
}

/// Parses the file name of a [`referrer_entry`] back into the referrer's digest.
pub fn parse_referrer_entry_name(file_name: &str) -> Option<Digest> {
    let (alg, hex) = file_name.split_once('-')?;
    format!("{alg}:{hex}").parse().ok()
}

/// The lease of the one garbage collector of storage several processes
/// write (see berth-registry's `gc::shared`).
pub fn gc_lease() -> String {
    format!("{BERTH_ROOT}/gc/lease")
}

/// An object a collector writes and reads back, for the store's time.
pub fn gc_clock(id: &str) -> String {
    format!("{BERTH_ROOT}/gc/clock/{id}")
}

pub fn gc_pins_root() -> String {
    format!("{BERTH_ROOT}/gc/pins")
}

/// The pins of one digest: one object per operation that added a reference.
pub fn gc_pins_of(digest: &Digest) -> String {
    format!("{BERTH_ROOT}/gc/pins/{}/{}", digest.algorithm(), digest.hex())
}

pub fn gc_pin(digest: &Digest, id: &str) -> String {
    format!("{}/{id}", gc_pins_of(digest))
}

/// Where claims live: one flat directory, so a pusher reads them all in one listing.
pub fn gc_claims_dir() -> String {
    format!("{BERTH_ROOT}/gc/claims")
}

pub fn gc_claim(digest: &Digest) -> String {
    format!("{}/{}-{}", gc_claims_dir(), digest.algorithm(), digest.hex())
}

/// A collector's claim on a tag it is about to remove by a retention rule;
/// a pusher of that tag looks for it after writing the tag. `_tag` cannot be
/// a repository name's component (those start with a letter or digit).
pub fn gc_tag_claim(name: &RepoName, tag: &Tag) -> String {
    format!("{BERTH_ROOT}/gc/tag-claims/{name}/_tag/{}", tag.as_str())
}

/// The catalog's index on storage several processes write (S3): one empty
/// object per repository, so that a catalog page is one listing from a
/// start-after cursor however many repositories there are (see
/// [`crate::CatalogIndexed`]). Not part of distribution's layout: a bucket
/// without it is walked.
pub fn catalog_index_root() -> String {
    format!("{BERTH_ROOT}/catalog/repositories")
}

/// The index entry of repository `name`, relative to [`catalog_index_root`]:
/// the name in hexadecimal. The entries are flat (not every store lists
/// nested keys in byte order) and list in the names' order: hex keeps byte
/// order, and a name sorts before the longer names it begins (`a` < `a-b`
/// < `a/b`, as `61` < `612d62` < `612f62`).
pub fn catalog_entry(name: &str) -> String {
    hex::encode(name)
}

/// The repository name of an index entry ([`catalog_entry`]).
pub fn parse_catalog_entry(entry: &str) -> Option<RepoName> {
    String::from_utf8(hex::decode(entry).ok()?).ok()?.parse().ok()
}

/// Written once the index holds every repository (after a walk of the
/// layout); until then the catalog walks.
pub fn catalog_index_complete() -> String {
    format!("{BERTH_ROOT}/catalog/complete")
}

/// The repository whose link `key` is (`<root>/<name>/_layers/...` or
/// `<root>/<name>/_manifests/...`): writing such a link makes the name a
/// repository of the catalog.
pub fn repository_of_link(key: &str) -> Option<&str> {
    let (name, internal) = split_repository_key(key.strip_prefix(ROOT)?.strip_prefix("/repositories/")?)?;
    (internal.starts_with("_layers/") || internal.starts_with("_manifests/")).then_some(name)
}

/// A key below `repositories/` as the repository's name and what follows
/// it (`_layers/...`, `_manifests/...`, `_uploads/...`); `None` for a key
/// that stops at or above a repository.
fn split_repository_key(below_repositories: &str) -> Option<(&str, &str)> {
    // A name's components never start with `_`: the first `/_` ends it.
    let end = below_repositories.find("/_")?;
    Some((&below_repositories[..end], &below_repositories[end + 1..]))
}

/// What of the repositories a write or delete of `key` (or of everything
/// under `key`, for a prefix) can change, as far as resolving a manifest
/// reference goes: a per-replica cache of resolutions forgets exactly this
/// (berth-registry's `resolved`).
#[derive(Debug, PartialEq, Eq)]
pub enum RepositoryScope<'a> {
    /// The tags or revisions of the repository `name` (`<name>/_manifests/...`).
    Manifests(&'a str),
    /// Nothing a reference resolves through: blobs, layer links, uploads,
    /// berth's own keys.
    Unrelated,
    /// Possibly any repository's manifests: a prefix above a repository's
    /// `_manifests` (a repository, a namespace, the root).
    Any,
}

pub fn repository_scope(key: &str) -> RepositoryScope<'_> {
    let Some(rest) = key.strip_prefix(ROOT) else {
        return if ROOT.starts_with(key) {
            RepositoryScope::Any
        } else {
            RepositoryScope::Unrelated
        };
    };
    let Some(repos) = rest.strip_prefix("/repositories/") else {
        return if "/repositories".starts_with(rest) {
            RepositoryScope::Any
        } else {
            RepositoryScope::Unrelated
        };
    };
    match split_repository_key(repos) {
        Some((name, internal)) if internal.starts_with("_manifests") => RepositoryScope::Manifests(name),
        Some(_) => RepositoryScope::Unrelated,
        None => RepositoryScope::Any,
    }
}

/// The lock of one quota where several processes write the store (see
/// berth-registry's `rules::ledger`); `id` names the quota.
pub fn quota_lock(id: &str) -> String {
    format!("{BERTH_ROOT}/quota/{id}/lock")
}

/// The log of a quota's reservations: one object per manifest PUT.
pub fn quota_log_dir(id: &str) -> String {
    format!("{BERTH_ROOT}/quota/{id}/log")
}

/// Replaced by each garbage collection pass: processes count afresh.
pub fn quota_generation(id: &str) -> String {
    format!("{BERTH_ROOT}/quota/{id}/generation")
}

/// Parses the name of a [`gc_claim`] back into its digest.
pub fn parse_gc_claim_name(file_name: &str) -> Option<Digest> {
    parse_referrer_entry_name(file_name)
}

pub fn self_image_dir(executable: &Digest) -> String {
    format!(
        "{BERTH_ROOT}/self-image/{}-{}",
        executable.algorithm(),
        executable.hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the layout: changing any of these breaks every existing data
    /// directory (and compatibility with distribution), so it must be deliberate.
    #[test]
    fn layout_is_pinned() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        let h = d.hex();
        let n: RepoName = "team/app".parse().unwrap();
        let t: Tag = "v1".parse().unwrap();
        let r = "docker/registry/v2/repositories/team/app";
        assert_eq!(blob_data(&d), format!("docker/registry/v2/blobs/sha256/e3/{h}/data"));
        assert_eq!(repository(&n), r);
        assert_eq!(blobs_root(), "docker/registry/v2/blobs");
        assert_eq!(blob_dir(&d), format!("docker/registry/v2/blobs/sha256/e3/{h}"));
        assert_eq!(layers_dir(&n), format!("{r}/_layers"));
        assert_eq!(revisions_dir(&n), format!("{r}/_manifests/revisions"));
        assert_eq!(layer_link(&n, &d), format!("{r}/_layers/sha256/{h}/link"));
        assert_eq!(gc_lease(), "berth/v1/gc/lease");
        assert_eq!(gc_clock("c1"), "berth/v1/gc/clock/c1");
        assert_eq!(gc_pins_root(), "berth/v1/gc/pins");
        assert_eq!(gc_pin(&d, "p1"), format!("berth/v1/gc/pins/sha256/{h}/p1"));
        assert_eq!(gc_claim(&d), format!("berth/v1/gc/claims/sha256-{h}"));
        assert_eq!(quota_lock("q1"), "berth/v1/quota/q1/lock");
        assert_eq!(catalog_index_root(), "berth/v1/catalog/repositories");
        assert_eq!(catalog_index_complete(), "berth/v1/catalog/complete");
        assert_eq!(catalog_entry("team/app"), "7465616d2f617070");
        assert_eq!(parse_catalog_entry("7465616d2f617070").unwrap().as_str(), "team/app");
        assert_eq!(parse_catalog_entry("team/app"), None);
        let names = ["a/b", "a-b", "a", "a.b", "a/b/c", "b"];
        let mut entries: Vec<String> = names.iter().map(|n| catalog_entry(n)).collect();
        entries.sort();
        let mut sorted = names.to_vec();
        sorted.sort();
        let back: Vec<String> = entries
            .iter()
            .map(|e| parse_catalog_entry(e).unwrap().to_string())
            .collect();
        assert_eq!(back, sorted, "entries sort as the names do");
        let repos = repositories_root();
        assert_eq!(
            repository_of_link(&format!("{repos}/team/app/_layers/sha256/{h}/link")),
            Some("team/app")
        );
        assert_eq!(
            repository_of_link(&format!("{repos}/app/_manifests/revisions/sha256/{h}/link")),
            Some("app")
        );
        assert_eq!(repository_of_link(&format!("{repos}/app/_uploads/u1/data")), None);
        assert_eq!(repository_of_link("berth/v1/gc/lease"), None);
        use RepositoryScope::*;
        let tag = tag_current_link(&"team/app".parse().unwrap(), &"v1".parse().unwrap());
        assert_eq!(repository_scope(&tag), Manifests("team/app"));
        assert_eq!(
            repository_scope(&format!("{repos}/app/_manifests/tags/v1")),
            Manifests("app")
        );
        assert_eq!(repository_scope(&format!("{repos}/app/_manifests")), Manifests("app"));
        assert_eq!(
            repository_scope(&format!("{repos}/app/_layers/sha256/{h}/link")),
            Unrelated
        );
        assert_eq!(repository_scope(&format!("{repos}/app/_uploads/u1")), Unrelated);
        assert_eq!(repository_scope(&format!("{repos}/team/app")), Any);
        assert_eq!(repository_scope(&format!("{repos}/team")), Any);
        assert_eq!(repository_scope(&repos), Any);
        assert_eq!(repository_scope(ROOT), Any);
        assert_eq!(repository_scope("docker"), Any);
        assert_eq!(
            repository_scope(&blob_data(
                &"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
                    .parse()
                    .unwrap()
            )),
            Unrelated
        );
        assert_eq!(repository_scope("berth/v1/gc/lease"), Unrelated);
        assert_eq!(quota_log_dir("q1"), "berth/v1/quota/q1/log");
        assert_eq!(quota_generation("q1"), "berth/v1/quota/q1/generation");
        assert_eq!(
            gc_tag_claim(&"team/app".parse().unwrap(), &"v1.2".parse().unwrap()),
            "berth/v1/gc/tag-claims/team/app/_tag/v1.2"
        );
        assert_eq!(parse_gc_claim_name(&format!("sha256-{h}")), Some(d.clone()));
        assert_eq!(
            manifest_revision_link(&n, &d),
            format!("{r}/_manifests/revisions/sha256/{h}/link")
        );
        assert_eq!(tags_dir(&n), format!("{r}/_manifests/tags"));
        assert_eq!(tag_current_link(&n, &t), format!("{r}/_manifests/tags/v1/current/link"));
        assert_eq!(tag_index_dir(&n, &t), format!("{r}/_manifests/tags/v1/index"));
        assert_eq!(
            tag_index_link(&n, &t, &d),
            format!("{r}/_manifests/tags/v1/index/sha256/{h}/link")
        );
        assert_eq!(upload_data(&n, "u1"), format!("{r}/_uploads/u1"));
        assert_eq!(legacy_upload_started_at(&n, "u1"), format!("{r}/_uploads/u1/startedat"));
        assert_eq!(link_content(&d), d.to_string());
        assert_eq!(
            referrer_entry(&n, &d, &d),
            format!("berth/v1/repositories/team/app/_referrers/sha256/{h}/sha256-{h}")
        );
        assert_eq!(parse_referrer_entry_name(&format!("sha256-{h}")), Some(d.clone()));
        assert_eq!(self_image_dir(&d), format!("berth/v1/self-image/sha256-{h}"));
        assert_eq!(FS_TRASH, "berth/v1/trash");
        assert_eq!(FS_SERVE_LOCK, "berth/v1/serve.lock");
        assert_eq!(FS_TEMP, "berth/v1/tmp");
        assert_eq!(FS_SCATTERED_TEMP_SWEPT, "berth/v1/scattered-temp-swept");
        assert_eq!(FS_EXTERNAL_WRITES, "berth/v1/external-writes");
        for cached in [
            blob_data(&d),
            layer_link(&n, &d),
            manifest_revision_link(&n, &d),
            tag_current_link(&n, &t),
            tag_index_link(&n, &t, &d),
        ] {
            assert!(is_cacheable(&cached), "{cached}");
        }
        for not_cached in [
            upload_data(&n, "u1"),
            legacy_upload_started_at(&n, "u1"),
            format!("{r}/_uploads/u1/data"),
            referrer_entry(&n, &d, &d),
            FS_EXTERNAL_WRITES.to_owned(),
            tags_dir(&n),
        ] {
            assert!(!is_cacheable(&not_cached), "{not_cached}");
        }
    }
}
