//! containerd's `hosts.toml` mirrors ask for `/v2/library/alpine/manifests/latest?ns=docker.io`:
//! the repository's registry is in the query. When that registry is the
//! prefix of a mirrored upstream, the request is for the repository under the
//! prefix, and is rewritten to it before anything looks at the path, so
//! routing, authorization and the log all see the one name it is served under.

use berth_registry::Registry;
use http::uri::{PathAndQuery, Uri};

pub(crate) fn rewrite(uri: &Uri, reg: &Registry) -> Option<Uri> {
    let query = uri.query()?;
    let ns = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "ns")?.1;
    let rest = uri.path().strip_prefix("/v2/")?;
    if rest.is_empty() || rest == "_catalog" || !reg.mirrors_namespace(&ns) {
        return None;
    }
    let pq: PathAndQuery = format!("/v2/{ns}/{rest}?{query}").parse().ok()?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_registry::{RegistryConfig, UpstreamConfig};
    use std::sync::Arc;

    fn registry() -> Registry {
        let dir = std::env::temp_dir().join("berth-mirror-ns-test-unused");
        let backend = Arc::new(berth_storage::FsBackend::new(&dir));
        let mut reg = Registry::new(backend, RegistryConfig::default());
        reg.add_upstream(UpstreamConfig::new("docker.io", vec!["http://127.0.0.1:9".into()]))
            .unwrap();
        reg
    }

    #[test]
    fn ns_of_a_mirrored_registry_moves_the_name_under_its_prefix() {
        let reg = registry();
        let uri: Uri = "/v2/library/alpine/manifests/latest?ns=docker.io".parse().unwrap();
        assert_eq!(
            rewrite(&uri, &reg).unwrap().to_string(),
            "/v2/docker.io/library/alpine/manifests/latest?ns=docker.io"
        );
        for untouched in [
            "/v2/library/alpine/manifests/latest?ns=ghcr.io",
            "/v2/library/alpine/manifests/latest",
            "/v2/?ns=docker.io",
            "/v2/_catalog?ns=docker.io",
            "/token?ns=docker.io",
        ] {
            assert!(rewrite(&untouched.parse().unwrap(), &reg).is_none(), "{untouched}");
        }
    }
}
