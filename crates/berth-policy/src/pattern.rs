//! Repository name patterns: components split at `/`; `*` inside a component
//! matches any run of characters in that component (`*` alone: exactly one
//! component), `**` as a whole component matches any number of components,
//! none included (`team/**` matches `team`, `team/a` and `team/a/b`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `**`: zero or more whole components.
    AnyDepth,
    /// One component, with `*` wildcards inside it.
    Component(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError("an empty repository pattern matches nothing".into()));
        }
        let mut parts = Vec::new();
        for component in text.split('/') {
            if component.is_empty() {
                return Err(PatternError(format!(
                    "repository pattern {text:?} has an empty component"
                )));
            }
            if component == "**" {
                // `**/**` means the same as `**`; keeping one keeps matching linear.
                if parts.last() != Some(&Part::AnyDepth) {
                    parts.push(Part::AnyDepth);
                }
            } else if component.contains("**") {
                return Err(PatternError(format!(
                    "repository pattern {text:?}: `**` must be a whole component"
                )));
            } else {
                parts.push(Part::Component(component.to_owned()));
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` (a repository name) matches. Dynamic programming over
    /// components, so patterns with several `**` cannot blow up.
    pub fn matches(&self, name: &str) -> bool {
        let comps: Vec<&str> = name.split('/').collect();
        // reach[j]: the pattern parts seen so far can match comps[..j].
        let mut reach = vec![false; comps.len() + 1];
        reach[0] = true;
        for part in &self.parts {
            let mut next = vec![false; comps.len() + 1];
            match part {
                Part::AnyDepth => {
                    let mut on = false;
                    for j in 0..=comps.len() {
                        on |= reach[j];
                        next[j] = on;
                    }
                }
                Part::Component(p) => {
                    for j in 0..comps.len() {
                        if reach[j] && component_matches(p, comps[j]) {
                            next[j + 1] = true;
                        }
                    }
                }
            }
            reach = next;
        }
        reach[comps.len()]
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*` matches any run of characters (none included) within one component.
fn component_matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: an exact match.
        return rest.is_empty();
    };
    // Greedy leftmost matching of the middle pieces is optimal for `*`-only globs.
    for piece in middle {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn single_star_is_one_component() {
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/sub"));
        assert!(!m("team/*", "team"));
        assert!(m("*", "alpine"));
        assert!(!m("*", "library/alpine"));
        assert!(m("*/alpine", "library/alpine"));
    }

    #[test]
    fn double_star_is_any_depth() {
        assert!(m("public/**", "public/a"));
        assert!(m("public/**", "public/a/b/c"));
        assert!(m("public/**", "public"));
        assert!(!m("public/**", "publicity/a"));
        assert!(!m("public/**", "other/public/a"));
        assert!(m("**", "anything/at/all"));
        assert!(m("**/cache", "a/b/cache"));
        assert!(m("**/cache", "cache"));
        assert!(!m("**/cache", "a/cache/b"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(m("**/x/**", "p/x/q/r"));
        assert!(m("a/**/**/z", "a/q/z"));
    }

    #[test]
    fn star_inside_a_component() {
        assert!(m("team-*/app", "team-red/app"));
        assert!(m("team-*/app", "team-/app"));
        assert!(!m("team-*/app", "team/app"));
        assert!(m("*-cache", "build-cache"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(!m("a*b*c", "axxbyy"));
        assert!(!m("ab*ba", "aba"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }

    #[test]
    fn bad_patterns() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a//b").is_err());
        assert!(Pattern::parse("/a").is_err());
        assert!(Pattern::parse("a**").is_err());
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let p = Pattern::parse(&["**"; 40].join("/x/")).unwrap();
        let name = ["y"; 200].join("/");
        assert!(!p.matches(&name));
    }
}
