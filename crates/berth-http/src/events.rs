//! Notifications from the request path: what a request that may cause an
//! event must remember before it is handled (its repository, reference and
//! client details), and the event built from that and the response. Nothing
//! here runs unless notifications are configured and an endpoint wants the
//! action and repository; sending is the notifier's background tasks' job.

use crate::access_log::ClientAddr;
use crate::route::Route;
use axum::extract::Request;
use axum::response::Response;
use berth_notify::{Action, Actor, Event, Notifier, RequestInfo, Target};
use http::{header, Method};

/// The size of a pushed manifest, as a response extension of the PUT (the
/// response has no body to take it from).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PushedSize(pub u64);

pub(crate) struct Pending {
    action: Action,
    /// A blob delete (otherwise a manifest).
    blob: bool,
    repository: String,
    reference: String,
    request: RequestInfo,
    /// The pushed manifest's media type, from the request.
    content_type: Option<String>,
}

/// What a request needs to remember if it may cause an event.
pub(crate) fn pending(notifier: &Notifier, req: &Request) -> Option<Pending> {
    let method = req.method();
    let (action, blob, name, reference) = match crate::route::parse(req.uri().path())? {
        Route::Manifest { name, reference } => match *method {
            Method::GET => (Action::Pull, false, name, reference),
            Method::PUT => (Action::Push, false, name, reference),
            Method::DELETE => (Action::Delete, false, name, reference),
            _ => return None,
        },
        Route::Blob { name, digest } if *method == Method::DELETE => (Action::Delete, true, name, digest),
        _ => return None,
    };
    if !notifier.wants(action, name) {
        return None;
    }
    let header = |h: header::HeaderName| {
        req.headers()
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    Some(Pending {
        action,
        blob,
        repository: name.to_owned(),
        reference: reference.to_owned(),
        request: RequestInfo {
            id: uuid::Uuid::new_v4().to_string(),
            addr: req
                .extensions()
                .get::<ClientAddr>()
                .map(|c| c.0.to_string())
                .unwrap_or_default(),
            host: header(header::HOST),
            method: method.as_str().to_owned(),
            useragent: header(header::USER_AGENT),
        },
        content_type: req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    })
}

impl Pending {
    /// Sends the event if the request did what it asked (a 2xx answer).
    pub(crate) fn finish(self, notifier: &Notifier, resp: &Response, actor: String) {
        if !resp.status().is_success() {
            return;
        }
        let h = resp.headers();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        let is_digest = self.reference.contains(':');
        let digest = match get("docker-content-digest") {
            Some(d) => d.to_owned(),
            None if is_digest => self.reference.clone(),
            None => String::new(),
        };
        let tag = (!is_digest).then(|| self.reference.clone());
        let (media_type, size) = match self.action {
            Action::Pull => (
                get("content-type").unwrap_or_default().to_owned(),
                get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0),
            ),
            Action::Push => (
                self.content_type.unwrap_or_default(),
                resp.extensions().get::<PushedSize>().map_or(0, |s| s.0),
            ),
            Action::Delete => (String::new(), 0),
        };
        let kind = if self.blob { "blobs" } else { "manifests" };
        let url = match (self.request.host.as_str(), digest.as_str()) {
            ("", _) | (_, "") => String::new(),
            (host, digest) => format!(
                "{}://{host}/v2/{}/{kind}/{digest}",
                notifier.url_scheme(),
                self.repository
            ),
        };
        let target = Target {
            media_type,
            digest,
            size,
            length: size,
            repository: self.repository,
            url,
            tag,
        };
        let event = Event::new(
            self.action,
            target,
            self.request,
            Actor { name: actor },
            notifier.source().clone(),
        );
        notifier.notify(event);
    }
}
