//! The config file's `[[retention]]`, `[[immutable]]` and `[[quota]]`
//! sections, turned into the registry's [`Rules`] (examples/rules.toml).

use crate::cli::parse_span;
use crate::config::Sections;
use berth_registry::{ImmutableRule, QuotaRule, RetentionRule, Rules};
use serde::{Deserialize, Serialize};

/// `[[retention]]`: which tags a garbage collection pass keeps in the
/// repositories matching `repositories` (the first matching rule applies).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionSection {
    pub repositories: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<usize>,
    /// A regular expression (unanchored unless it says `^...$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_tags: Option<String>,
    /// A duration: `30d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

/// `[[immutable]]`: tags that never move once pushed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImmutableSection {
    pub repositories: String,
    /// A regular expression; every tag without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
}

/// `[[quota]]`: the bytes the matching repositories may hold together.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QuotaSection {
    pub repositories: String,
    /// Bytes, or a string with a unit: `"500MB"`, `"10GiB"`.
    pub limit: Size,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(t) => parse_size(t),
        }
    }
}

/// `1000`, `500MB`, `10GiB`, `1.5TB` (decimal units, or binary with `i`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (like 500MB, 10GiB or bytes)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    let bytes = value * factor;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes as u64)
}

/// The registry's rules from the config file's sections; every mistake is
/// an error naming its rule.
pub fn compile(sections: &Sections) -> anyhow::Result<Rules> {
    let mut rules = Rules::default();
    for r in &sections.retention {
        let within = r
            .keep_within
            .as_deref()
            .map(|w| parse_span(w).map_err(|e| format!("retention rule for {:?}, keep-within: {e}", r.repositories)))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        rules.retention.push(
            RetentionRule::new(&r.repositories, r.keep_last, r.keep_tags.as_deref(), within)
                .map_err(anyhow::Error::msg)?,
        );
    }
    for r in &sections.immutable {
        rules
            .immutable
            .push(ImmutableRule::new(&r.repositories, r.tags.as_deref()).map_err(anyhow::Error::msg)?);
    }
    for q in &sections.quota {
        let limit = q
            .limit
            .bytes()
            .map_err(|e| anyhow::anyhow!("quota for {:?}: {e}", q.repositories))?;
        rules
            .quotas
            .push(QuotaRule::new(&q.repositories, limit).map_err(anyhow::Error::msg)?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5 kb"), Ok(1500));
        for bad in ["", "GB", "10 parsecs", "-1", "1e999"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sections_become_rules_and_mistakes_name_their_rule() {
        let sections: Sections = toml::from_str(
            r#"
            [[retention]]
            repositories = "ci/**"
            keep-last = 10
            keep-tags = "^v"
            keep-within = "30d"

            [[immutable]]
            repositories = "prod/**"
            tags = "^v[0-9]"

            [[quota]]
            repositories = "team/**"
            limit = "10GiB"

            [[quota]]
            repositories = "small"
            limit = 1000
            "#,
        )
        .unwrap();
        let rules = compile(&sections).unwrap();
        assert_eq!(
            rules.retention[0].keep_within,
            Some(std::time::Duration::from_secs(30 * 86400))
        );
        assert_eq!(rules.quotas[0].limit, 10 << 30);
        assert_eq!(rules.quotas[1].limit, 1000);
        assert_eq!(rules.immutable.len(), 1);

        for (text, expected) in [
            ("[[retention]]\nrepositories = \"a\"\n", "keep-last"),
            (
                "[[retention]]\nrepositories = \"a\"\nkeep-tags = \"(\"\n",
                "not a regular expression",
            ),
            (
                "[[retention]]\nrepositories = \"a\"\nkeep-within = \"3w\"\n",
                "keep-within",
            ),
            ("[[immutable]]\nrepositories = \"a//b\"\n", "empty component"),
            ("[[quota]]\nrepositories = \"a\"\nlimit = \"lots\"\n", "quota for \"a\""),
        ] {
            let sections: Sections = toml::from_str(text).unwrap();
            let err = compile(&sections).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
