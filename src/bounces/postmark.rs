//! Postmark's bounce and spam-complaint webhooks: one JSON record per request
//! (`RecordType` `Bounce` or `SpamComplaint`), protected by HTTP basic auth.
//! Pure: the body in, a [`ProviderEvent`] out.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::webhook::ProviderEvent;
use super::{EventKind, StatusCode};

/// The fields of Postmark's bounce and spam-complaint records that we read;
/// the others (Tag, ServerID, Subject, Content, …) are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    record_type: Option<String>,
    #[serde(rename = "ID")]
    id: Option<serde_json::Value>,
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
    email: Option<String>,
    details: Option<String>,
    description: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

/// Metadata keys that may carry the Message-ID we gave the message (sent as an
/// `X-PM-Metadata-message-id` header), looked at before Postmark's own id.
const METADATA_KEYS: [&str; 2] = ["message-id", "message_id"];

/// Longest metadata value Postmark keeps (its documented limit).
pub const MAX_METADATA_VALUE: usize = 80;

/// Our Message-IDs do not fit in Postmark's metadata: its reports could not be
/// matched to what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Postmark: our Message-IDs, sent as X-PM-Metadata-message-id, are {length} characters long \
     with the From domain {domain:?}, over the {MAX_METADATA_VALUE} Postmark keeps as \
     metadata: its bounce and complaint reports could not be matched to what was sent. \
     Send from a domain of at most {room} characters (sender.from)"
)]
pub struct MessageIdTooLong {
    /// Characters in the Message-ID.
    pub length: usize,
    /// The From domain that ends it.
    pub domain: String,
    /// The longest domain that would fit.
    pub room: usize,
}

/// Whether `message_id`, one of ours as the `X-PM-Metadata-message-id` header
/// carries it, fits in Postmark's metadata. The error says what it breaks and
/// what to change.
pub fn check_metadata(message_id: &str) -> Result<(), MessageIdTooLong> {
    let length = message_id.chars().count();
    if length <= MAX_METADATA_VALUE {
        return Ok(());
    }
    let domain = message_id.rsplit_once('@').map_or("", |(_, d)| d);
    let room = MAX_METADATA_VALUE.saturating_sub(length - domain.chars().count());
    Err(MessageIdTooLong {
        length,
        domain: domain.to_string(),
        room,
    })
}

/// Why a webhook body is not a record that can be read (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a Postmark webhook record: {error}")]
    NotJson { error: serde_json::Error },
    #[error("the record has no Email")]
    NoEmail,
}

/// What one of Postmark's bounce types means here. Types that are not about the
/// address (auto-replies, subscription changes, challenges) are no report.
fn kind_of(record_type: &str, bounce_type: &str) -> Option<EventKind> {
    if record_type == "SpamComplaint" {
        return Some(EventKind::Complaint);
    }
    match bounce_type {
        "HardBounce" | "BadEmailAddress" => Some(EventKind::HardBounce),
        "SoftBounce" | "Transient" | "DnsError" | "Blocked" => Some(EventKind::SoftBounce),
        "SpamComplaint" => Some(EventKind::Complaint),
        _ => None,
    }
}

/// Reads one webhook body. The error names what is missing.
pub fn parse(body: &[u8]) -> Result<ProviderEvent, RecordError> {
    let r: Record = serde_json::from_slice(body).map_err(|error| RecordError::NotJson { error })?;
    let record_type = r.record_type.as_deref().unwrap_or("");
    let email = r
        .email
        .filter(|e| !e.trim().is_empty())
        .ok_or(RecordError::NoEmail)?;
    let mut message_ids: Vec<String> = METADATA_KEYS
        .iter()
        .filter_map(|k| r.metadata.get(*k)?.as_str().map(str::to_string))
        .collect();
    message_ids.extend(r.message_id.filter(|m| !m.is_empty()));
    let key = match &r.id {
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        // No id: the body itself names the event (a retry sends the same bytes).
        _ => crate::config::hex(&Sha256::digest(body)),
    };
    let kind = match record_type {
        "Bounce" | "SpamComplaint" => kind_of(record_type, r.kind.as_deref().unwrap_or("")),
        _ => None,
    };
    let diagnostic = [r.details, r.description]
        .into_iter()
        .flatten()
        .find(|d| !d.trim().is_empty());
    let status = diagnostic
        .as_deref()
        .and_then(StatusCode::find_failure)
        .filter(|s| match kind {
            Some(EventKind::HardBounce) => s.is_permanent(),
            Some(EventKind::SoftBounce) => !s.is_permanent(),
            _ => true,
        });
    Ok(ProviderEvent {
        key: format!("{}:{key}", record_type.to_ascii_lowercase()),
        message_ids,
        recipient: email,
        kind,
        status,
        diagnostic,
    })
}

/// The credentials Postmark is given in the webhook's URL
/// (`https://user:password@news.example.com/webhooks/postmark`).
#[derive(Clone)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BasicAuth({}, …)", self.user)
    }
}

impl BasicAuth {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> BasicAuth {
        BasicAuth {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Whether an `Authorization` header value carries these credentials,
    /// compared in constant time.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        use subtle::ConstantTimeEq;
        let Some(encoded) = header.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("{}:{}", self.user, self.password);
        // Hash both sides first: the comparison then takes the same time
        // whatever the lengths.
        let a = Sha256::digest(&decoded);
        let b = Sha256::digest(expected.as_bytes());
        bool::from(a.ct_eq(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_documented_hard_bounce_reads_as_a_hard_bounce_of_its_message() {
        let body = br#"{
          "RecordType": "Bounce", "MessageStream": "outbound", "ID": 4323372036854775807,
          "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce", "Tag": "Test",
          "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Metadata": {"a_key": "a_value"},
          "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
          "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
          "Email": "john@example.com", "From": "sender@example.com",
          "BouncedAt": "2019-11-05T16:33:54.9070259Z", "DumpAvailable": true, "Inactive": true,
          "CanActivate": true, "Subject": "Test subject", "Content": "<Full dump of bounce>"
        }"#;
        let ev = parse(body).unwrap();
        assert_eq!(ev.kind, Some(EventKind::HardBounce));
        assert_eq!(ev.recipient, "john@example.com");
        assert_eq!(ev.message_ids, vec!["883953f4-6105-42a2-a16a-77a8eac79483"]);
        assert_eq!(ev.key, "bounce:4323372036854775807");
        assert_eq!(ev.status.map(|s| s.to_string()).as_deref(), Some("5.1.1"));
    }

    #[test]
    fn types_map_to_what_they_mean_for_the_address() {
        let with = |record: &str, kind: &str| {
            let body = format!(
                r#"{{"RecordType":"{record}","ID":1,"Type":"{kind}","Email":"a@b.example","MessageID":"m",
                    "Metadata":{{"message-id":"ours@news.example.com"}}}}"#
            );
            parse(body.as_bytes()).unwrap()
        };
        assert_eq!(
            with("Bounce", "SoftBounce").kind,
            Some(EventKind::SoftBounce)
        );
        assert_eq!(
            with("Bounce", "Transient").kind,
            Some(EventKind::SoftBounce)
        );
        assert_eq!(
            with("SpamComplaint", "SpamComplaint").kind,
            Some(EventKind::Complaint)
        );
        assert_eq!(with("Bounce", "AutoResponder").kind, None);
        assert_eq!(with("Bounce", "Unsubscribe").kind, None);
        assert_eq!(with("Delivery", "").kind, None);
        assert_eq!(
            with("Bounce", "HardBounce").message_ids,
            vec!["ours@news.example.com", "m"]
        );
        let e = parse(br#"{"RecordType":"Bounce","ID":1}"#).unwrap_err();
        assert!(matches!(e, RecordError::NoEmail), "{e:?}");
        assert!(e.to_string().contains("Email"));
        let e = parse(br#"{"RecordType":"Bounce","ID":1,"Email":"  "}"#).unwrap_err();
        assert!(matches!(e, RecordError::NoEmail), "{e:?}");
        let e = parse(b"not json").unwrap_err();
        assert!(matches!(e, RecordError::NotJson { .. }), "{e:?}");
        assert!(e.to_string().starts_with("not a Postmark webhook record: "));
    }

    #[test]
    fn a_message_id_over_postmarks_80_metadata_characters_is_named_with_the_room_left() {
        // Ours are 32 hex digits, "@", then the From domain: 47 characters of domain fit.
        let id = |domain_len: usize| {
            format!("{}@{}.example", "a".repeat(32), "d".repeat(domain_len - 8))
        };
        assert_eq!(id(47).len(), 80);
        assert_eq!(check_metadata(&id(47)), Ok(()));
        assert_eq!(check_metadata("abc@news.example.com"), Ok(()));
        let e = check_metadata(&id(48)).unwrap_err();
        assert_eq!(
            e,
            MessageIdTooLong {
                length: 81,
                domain: format!("{}.example", "d".repeat(40)),
                room: 47,
            }
        );
        let e = e.to_string();
        assert!(e.contains("are 81 characters long"), "{e}");
        assert!(
            e.contains("a domain of at most 47 characters (sender.from)"),
            "{e}"
        );
    }

    #[test]
    fn basic_auth_accepts_only_its_own_credentials() {
        use base64::Engine;
        let auth = BasicAuth::new("postmark", "s3cret-s3cret");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(auth.accepts(Some(&format!("Basic {}", b64("postmark:s3cret-s3cret")))));
        assert!(auth.accepts(Some(&format!("basic {}", b64("postmark:s3cret-s3cret")))));
        for bad in [
            None,
            Some(format!("Basic {}", b64("postmark:wrong"))),
            Some(format!("Basic {}", b64("other:s3cret-s3cret"))),
            Some(format!("Bearer {}", b64("postmark:s3cret-s3cret"))),
            Some("Basic !!!".to_string()),
        ] {
            assert!(!auth.accepts(bad.as_deref()), "{bad:?}");
        }
    }
}
