//! The one route parser. Repository names may hold any number of `/`, so the
//! path is read from the right: the last one or two segments say which
//! endpoint it is, and everything before them is the name.
//!
//! ```text
//! /v2/                                   Base
//! /v2/_catalog                           Catalog
//! /v2/<name>/tags/list                   Tags
//! /v2/<name>/manifests/<reference>       Manifest
//! /v2/<name>/blobs/uploads/              UploadStart
//! /v2/<name>/blobs/uploads/<id>          Upload
//! /v2/<name>/blobs/<digest>              Blob
//! /v2/<name>/referrers/<digest>          Referrers
//! ```
//! Names and references are returned raw: the handlers validate them, so a
//! malformed one gets the spec's error instead of a bare 404.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    Base,
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, id: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

/// Splits `s` at its last '/', giving (before, after).
fn split_last(s: &str) -> Option<(&str, &str)> {
    s.rsplit_once('/')
}

pub fn parse(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    // Upload start is the only route with a trailing slash (docker also sends it without).
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return non_empty(name).map(|name| Route::UploadStart { name });
    }
    let (before, last) = split_last(rest)?;
    let (name, kind) = split_last(before)?;
    let name = non_empty(name)?;
    if last.is_empty() {
        return None;
    }
    match kind {
        "manifests" => Some(Route::Manifest { name, reference: last }),
        "blobs" => Some(Route::Blob { name, digest: last }),
        "referrers" => Some(Route::Referrers { name, digest: last }),
        "tags" if last == "list" => Some(Route::Tags { name }),
        "uploads" => {
            let name = name.strip_suffix("/blobs")?;
            non_empty(name).map(|name| Route::Upload { name, id: last })
        }
        _ => None,
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Some(Route::Base));
        assert_eq!(parse("/v2"), Some(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(parse("/v2/a/b/c/tags/list"), Some(Route::Tags { name: "a/b/c" }));
        assert_eq!(
            parse("/v2/a/manifests/latest"),
            Some(Route::Manifest {
                name: "a",
                reference: "latest"
            })
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/"),
            Some(Route::UploadStart { name: "a/b" })
        );
        assert_eq!(parse("/v2/a/b/blobs/uploads"), Some(Route::UploadStart { name: "a/b" }));
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/123"),
            Some(Route::Upload { name: "a/b", id: "123" })
        );
        assert_eq!(
            parse("/v2/x/blobs/sha256:abc"),
            Some(Route::Blob {
                name: "x",
                digest: "sha256:abc"
            })
        );
        assert_eq!(
            parse("/v2/x/referrers/sha256:abc"),
            Some(Route::Referrers {
                name: "x",
                digest: "sha256:abc"
            })
        );
    }

    #[test]
    fn names_that_look_like_endpoints() {
        // Components named like endpoint keywords stay part of the name.
        assert_eq!(
            parse("/v2/manifests/blobs/manifests/tags"),
            Some(Route::Manifest {
                name: "manifests/blobs",
                reference: "tags"
            })
        );
        assert_eq!(parse("/v2/tags/tags/list"), Some(Route::Tags { name: "tags" }));
        assert_eq!(
            parse("/v2/blobs/uploads/blobs/x"),
            Some(Route::Blob {
                name: "blobs/uploads",
                digest: "x"
            })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads/blobs/uploads/id"),
            Some(Route::Upload {
                name: "a/blobs/uploads",
                id: "id"
            })
        );
        let deep = format!("/v2/{}/manifests/v1", ["n"; 40].join("/"));
        assert!(matches!(parse(&deep), Some(Route::Manifest { reference: "v1", .. })));
    }

    #[test]
    fn not_routes() {
        for p in [
            "/",
            "/v1/",
            "/v2x",
            "/v2/a",
            "/v2/manifests/x",
            "/v2/a/manifests/",
            "/v2/a/blobs/",
            "/v2//blobs/uploads/",
            "/v2/a/unknown/x",
            "/v2/blobs/uploads/id",
            "/v2/a/tags/other",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }
}
