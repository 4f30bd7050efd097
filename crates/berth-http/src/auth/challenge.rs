//! `WWW-Authenticate` values of 401 answers.

use http::HeaderValue;

/// Quotes a parameter value (RFC 9110 quoted-string): `"` and `\` escaped,
/// control characters dropped so a header can never be broken.
fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn header(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"berth\""))
}

/// `Basic realm="..."`
pub fn basic(realm: &str) -> HeaderValue {
    header(format!("Basic realm={}", quoted(realm)))
}

/// `Bearer realm="...",service="..."[,scope="..."][,error="..."]`
pub fn bearer(realm: &str, service: &str, scope: Option<&str>, error: Option<&str>) -> HeaderValue {
    let mut s = format!("Bearer realm={},service={}", quoted(realm), quoted(service));
    if let Some(scope) = scope {
        s.push_str(",scope=");
        s.push_str(&quoted(scope));
    }
    if let Some(error) = error {
        s.push_str(",error=");
        s.push_str(&quoted(error));
    }
    header(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(basic("berth"), "Basic realm=\"berth\"");
        assert_eq!(
            bearer(
                "https://r.example/token",
                "r.example",
                Some("repository:a/b:pull,push"),
                None
            ),
            "Bearer realm=\"https://r.example/token\",service=\"r.example\",scope=\"repository:a/b:pull,push\""
        );
        assert_eq!(
            bearer(
                "http://h/token",
                "s",
                Some("repository:x:push"),
                Some("insufficient_scope")
            ),
            "Bearer realm=\"http://h/token\",service=\"s\",scope=\"repository:x:push\",error=\"insufficient_scope\""
        );
        assert_eq!(bearer("r", "s", None, None), "Bearer realm=\"r\",service=\"s\"");
        assert_eq!(basic("a\"b\\c\nd"), "Basic realm=\"a\\\"b\\\\cd\"");
    }
}
