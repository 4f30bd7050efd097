//! How the names an archive gives its images map to berth repositories.
//!
//! An archive names images with references (`alpine:3.19`,
//! `docker.io/library/alpine:3.19`, `quay.io/org/app:1`) or, in an OCI layout,
//! sometimes with a bare tag (`latest`). The rule:
//!
//! - the registry host is dropped (a first component with a `.` or `:`, or
//!   `localhost`), and so is Docker Hub's implied `library/`: both
//!   `alpine:3.19` and `docker.io/library/alpine:3.19` are `alpine`, tag `3.19`;
//! - a reference without a tag gets `latest`; a digest in it is ignored (the
//!   manifest's digest is known anyway);
//! - under `--source PREFIX=PATH` the path goes below the prefix
//!   (`PREFIX/alpine:3.19`, `PREFIX/org/app:1`) and a bare tag names the
//!   prefix itself (`PREFIX:latest`);
//! - `berth import --repo NAME` puts every image in repository `NAME` with its
//!   own tag; without `--repo` the path is the repository, and a bare tag is
//!   refused (there is no name to put it under).

use berth_spec::{RepoName, Tag};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `--source PREFIX=PATH`: below a prefix.
    Prefix(RepoName),
    /// `berth import --repo NAME`: everything into one repository.
    Repo(RepoName),
    /// `berth import` without `--repo`: as the archive names them.
    AsNamed,
}

impl Placement {
    /// The repository for images that have no name at all (reachable by digest only).
    pub fn unnamed_repo(&self) -> Option<&RepoName> {
        match self {
            Placement::Prefix(r) | Placement::Repo(r) => Some(r),
            Placement::AsNamed => None,
        }
    }

    /// Where the image named `reference` goes.
    pub fn place(&self, reference: &str) -> Result<(RepoName, Tag), String> {
        let reference = reference.trim();
        let without_digest = reference.split('@').next().unwrap_or("");
        if !without_digest.contains('/') && !without_digest.contains(':') {
            if let Ok(tag) = without_digest.parse::<Tag>() {
                return match self {
                    Placement::Prefix(r) | Placement::Repo(r) => Ok((r.clone(), tag)),
                    Placement::AsNamed => Err(format!(
                        "the image is named only by the tag {reference:?}; give a repository with --repo"
                    )),
                };
            }
        }
        let (path, tag) = split_reference(without_digest);
        let tag: Tag = tag.parse().map_err(|e| format!("{reference:?}: {e}"))?;
        let repo = match self {
            Placement::Repo(r) => r.clone(),
            Placement::Prefix(p) => format!("{p}/{path}")
                .parse()
                .map_err(|e| format!("{reference:?}: {e}"))?,
            Placement::AsNamed => path.parse().map_err(|e| format!("{reference:?}: {e}"))?,
        };
        Ok((repo, tag))
    }
}

/// `host/a/b:tag` -> (`a/b`, `tag`), with the Docker Hub normalization above.
fn split_reference(reference: &str) -> (String, String) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[last_slash..].rfind(':') {
        Some(i) => (&reference[..last_slash + i], reference[last_slash + i + 1..].to_owned()),
        None => (reference, "latest".to_owned()),
    };
    let mut parts: Vec<&str> = name.split('/').collect();
    let mut hub = true;
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            hub = matches!(first, "docker.io" | "index.docker.io" | "registry-1.docker.io");
            parts.remove(0);
        }
    }
    if hub && parts.len() == 2 && parts[0] == "library" {
        parts.remove(0);
    }
    (parts.join("/"), tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(p: &Placement, r: &str) -> String {
        let (repo, tag) = p.place(r).unwrap();
        format!("{repo}:{tag}")
    }

    #[test]
    fn under_a_prefix() {
        let p = Placement::Prefix("mirror".parse().unwrap());
        assert_eq!(placed(&p, "alpine:3.19"), "mirror/alpine:3.19");
        assert_eq!(placed(&p, "docker.io/library/alpine:3.19"), "mirror/alpine:3.19");
        assert_eq!(placed(&p, "library/alpine"), "mirror/alpine:latest");
        assert_eq!(placed(&p, "quay.io/library/x:1"), "mirror/library/x:1");
        assert_eq!(placed(&p, "quay.io/org/app:1"), "mirror/org/app:1");
        assert_eq!(placed(&p, "localhost:5000/team/app:v2"), "mirror/team/app:v2");
        assert_eq!(placed(&p, "team/app:v2@sha256:abc"), "mirror/team/app:v2");
        assert_eq!(placed(&p, "latest"), "mirror:latest");
        assert_eq!(placed(&p, "3.19"), "mirror:3.19");
        assert!(p.place("Bad/Name:1").is_err());
    }

    #[test]
    fn import_placements() {
        let r = Placement::Repo("team/app".parse().unwrap());
        assert_eq!(placed(&r, "docker.io/library/alpine:3.19"), "team/app:3.19");
        assert_eq!(placed(&r, "v1"), "team/app:v1");
        let a = Placement::AsNamed;
        assert_eq!(placed(&a, "docker.io/library/alpine:3.19"), "alpine:3.19");
        assert_eq!(placed(&a, "127.0.0.1:5000/x/y:z"), "x/y:z");
        assert!(a.place("latest").unwrap_err().contains("--repo"));
    }
}
