//! The web page: a few static files embedded in the binary, served at `/`
//! and under `/ui/`. The page itself (plain HTML, CSS and JavaScript, no
//! build step) fetches everything it shows from the browse API (`browse.rs`).
//!
//! The files are public (they hold no data); a strict Content-Security-Policy
//! allows only these scripts and styles, so even a repository name or label
//! that slipped past the page's escaping could not run as a script.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, Method, StatusCode};

struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    bytes: include_bytes!("assets/index.html"),
    content_type: "text/html; charset=utf-8",
};

/// The asset at `path`, if `path` is one of the page's.
fn asset(path: &str) -> Option<Asset> {
    Some(match path {
        "/" | "/ui/" | "/ui/index.html" => INDEX,
        "/ui/app.js" => Asset {
            bytes: include_bytes!("assets/app.js"),
            content_type: "text/javascript; charset=utf-8",
        },
        "/ui/app.css" => Asset {
            bytes: include_bytes!("assets/app.css"),
            content_type: "text/css; charset=utf-8",
        },
        "/ui/icon.svg" => Asset {
            bytes: include_bytes!("assets/icon.svg"),
            content_type: "image/svg+xml",
        },
        _ => return None,
    })
}

/// Whether `path` belongs to the page (so that the caller answers it with [`serve`]).
pub fn is_page(path: &str) -> bool {
    path == "/ui" || asset(path).is_some()
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Answers a request for one of the page's files.
pub fn serve(path: &str, method: &Method) -> Response {
    let mut resp = Response::new(Body::empty());
    if path == "/ui" {
        *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
        resp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
        return resp;
    }
    if method != Method::GET && method != Method::HEAD {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let Some(asset) = asset(path) else {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    };
    if method == Method::GET {
        *resp.body_mut() = Body::from(asset.bytes);
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.bytes.len()));
    // The files change with the binary: revalidation is cheap, staleness confusing.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}
