//! An event and its envelope, field for field as CNCF distribution sends
//! them (`notifications/event.go`): a receiver written for distribution
//! reads berth's events unchanged.

use serde::Serialize;

/// The media type of the envelope.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Push, Action::Pull, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339.
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

impl Event {
    /// A new event now, with a fresh id.
    pub fn new(action: Action, target: Target, request: RequestInfo, actor: Actor, source: Source) -> Event {
        let timestamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp,
            action,
            target,
            request,
            actor,
            source,
        }
    }
}

/// What the event is about.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Target {
    #[serde(rename = "mediaType", skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    pub size: u64,
    /// The same as `size` (distribution sends both).
    pub length: u64,
    pub repository: String,
    /// Where the target can be fetched, as the client addressed the registry.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The request that caused the event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Actor {
    /// The signed-in user; empty for anonymous requests.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry instance that sent the event.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Source {
    /// The address berth listens on.
    pub addr: String,
    /// Unique per process start.
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// The body of one notification request.
#[derive(Serialize)]
pub(crate) struct Envelope<'a> {
    pub events: &'a [&'a Event],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_distributions_field_names() {
        let target = Target {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: "sha256:ab".into(),
            size: 12,
            length: 12,
            repository: "team/app".into(),
            url: "http://h/v2/team/app/manifests/sha256:ab".into(),
            tag: Some("v1".into()),
        };
        let source = Source {
            addr: "127.0.0.1:5000".into(),
            instance_id: "i".into(),
        };
        let e = Event::new(Action::Push, target, RequestInfo::default(), Actor::default(), source);
        let v = serde_json::to_value(Envelope { events: &[&e] }).unwrap();
        let e = &v["events"][0];
        assert_eq!(e["action"], "push");
        assert_eq!(e["target"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(e["target"]["length"], 12);
        assert_eq!(e["target"]["tag"], "v1");
        assert_eq!(e["source"]["instanceID"], "i");
        for key in ["id", "addr", "host", "method", "useragent"] {
            assert!(e["request"].get(key).is_some(), "{key}");
        }
        assert!(time::OffsetDateTime::parse(
            e["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok());
    }
}
