//! Scopes of the token authentication spec: `repository:NAME:pull,push`,
//! `registry:catalog:*`, space-separated or repeated.

/// One requested scope: a resource and the actions asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `repository` or `registry` (a `(class)` suffix is dropped).
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Scopes at most per request; more are ignored (a token request asks for a handful).
const MAX_SCOPES: usize = 64;
/// Longer scopes are ignored: no repository name is that long.
const MAX_SCOPE_LEN: usize = 1024;

impl Scope {
    /// Parses `type[(class)]:name:actions`. The name is everything between the
    /// first and the last `:`.
    pub fn parse(s: &str) -> Option<Scope> {
        if s.len() > MAX_SCOPE_LEN {
            return None;
        }
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        let actions = actions
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        Some(Scope {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions,
        })
    }

    /// The scopes in `values` (each may hold several, space-separated).
    /// Malformed ones are skipped: granting less is never an error.
    pub fn parse_all<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        values
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Scope::parse)
            .take(MAX_SCOPES)
            .collect()
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = Scope::parse("repository:library/alpine:pull,push").unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("repository", "library/alpine"));
        assert_eq!(s.actions, ["pull", "push"]);
        assert_eq!(s.to_string(), "repository:library/alpine:pull,push");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.actions[0].as_str()),
            ("registry", "catalog", "*")
        );
        let s = Scope::parse("repository(plugin):vieux/sshfs:pull").unwrap();
        assert_eq!(s.kind, "repository");
        // A name with a colon (a host with a port) stays whole.
        assert_eq!(Scope::parse("repository:host:5000/x:pull").unwrap().name, "host:5000/x");
        assert_eq!(Scope::parse("repository:x:").unwrap().actions, Vec::<String>::new());
        for bad in ["", "repository", "repository:x", ":x:pull", "repository::pull"] {
            assert_eq!(Scope::parse(bad), None, "{bad}");
        }
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "bad", "registry:catalog:*"]);
        assert_eq!(all.len(), 3);
        let many = vec!["repository:a:pull"; 500].join(" ");
        assert_eq!(Scope::parse_all([many.as_str()]).len(), MAX_SCOPES);
    }
}
