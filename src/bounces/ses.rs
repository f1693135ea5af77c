//! Amazon SES bounce and complaint notifications (the `Message` of a verified SNS
//! notification) → one [`ProviderEvent`] per recipient. Pure.
//!
//! SES rewrites the Message-ID of what it sends; the one we gave the message is in
//! the notification's original headers (`mail.headers`, `mail.commonHeaders`),
//! which SES includes when the identity's "include original headers" is on.

use serde::Deserialize;

use super::webhook::ProviderEvent;
use super::{EventKind, StatusCode};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    /// `eventType` when the notification comes from an SES event destination.
    #[serde(alias = "eventType")]
    notification_type: Option<String>,
    #[serde(default)]
    mail: Mail,
    bounce: Option<Bounce>,
    complaint: Option<Complaint>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    message_id: Option<String>,
    #[serde(default)]
    headers: Vec<Header>,
    common_headers: Option<CommonHeaders>,
}

#[derive(Debug, Deserialize)]
struct Header {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CommonHeaders {
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    bounce_type: Option<String>,
    #[serde(default)]
    bounced_recipients: Vec<BouncedRecipient>,
    feedback_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BouncedRecipient {
    email_address: String,
    status: Option<String>,
    diagnostic_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<ComplainedRecipient>,
    feedback_id: Option<String>,
    complaint_feedback_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComplainedRecipient {
    email_address: String,
}

/// Why a notification cannot be read. Signed by SNS, it is answered 200 and
/// ignored: a retry would carry the same.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("not an SES notification: {error}")]
    NotJson { error: serde_json::Error },
    #[error("the notification has no notificationType")]
    NoType,
    /// A bounce or complaint without our Message-ID: it cannot be matched.
    #[error(
        "the notification does not carry the message's original headers, so it cannot be \
         matched to what was sent: in SES, turn on \"Include original email headers\" for \
         this identity's Bounce and Complaint notifications"
    )]
    NoOriginalHeaders,
    #[error("a Bounce notification without its bounce object")]
    NoBounce,
    #[error("a Complaint notification without its complaint object")]
    NoComplaint,
}

/// The events of one SES notification (`Message` of the SNS notification).
/// A delivery notification gives none. The error says what is wrong.
pub fn parse(message: &str) -> Result<Vec<ProviderEvent>, NotificationError> {
    let n: Notification =
        serde_json::from_str(message).map_err(|error| NotificationError::NotJson { error })?;
    // Ours first: the original Message-ID header, then commonHeaders, then SES's own.
    let mut message_ids: Vec<String> = n
        .mail
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("message-id"))
        .map(|h| h.value.clone())
        .collect();
    message_ids.extend(n.mail.common_headers.and_then(|c| c.message_id));
    let bounce_or_complaint =
        matches!(n.notification_type.as_deref(), Some("Bounce" | "Complaint"));
    if message_ids.is_empty() && bounce_or_complaint {
        return Err(NotificationError::NoOriginalHeaders);
    }
    message_ids.extend(n.mail.message_id.clone());
    message_ids.dedup();
    let ses_id = n.mail.message_id.unwrap_or_default();
    let key = |feedback: &Option<String>, who: &str| {
        format!(
            "{}:{}",
            feedback.as_deref().unwrap_or(&ses_id),
            who.trim().to_ascii_lowercase()
        )
    };
    match n.notification_type.as_deref() {
        Some("Bounce") => {
            let b = n.bounce.ok_or(NotificationError::NoBounce)?;
            // Permanent: the address does not exist. Transient and Undetermined
            // may pass: counted as soft bounces.
            let kind = match b.bounce_type.as_deref() {
                Some("Permanent") => EventKind::HardBounce,
                _ => EventKind::SoftBounce,
            };
            Ok(b.bounced_recipients
                .iter()
                .map(|r| {
                    let status = r.status.as_deref().and_then(StatusCode::parse).or_else(|| {
                        r.diagnostic_code
                            .as_deref()
                            .and_then(StatusCode::find_failure)
                    });
                    ProviderEvent {
                        key: key(&b.feedback_id, &r.email_address),
                        message_ids: message_ids.clone(),
                        recipient: r.email_address.clone(),
                        kind: Some(kind),
                        status,
                        diagnostic: r.diagnostic_code.clone(),
                    }
                })
                .collect())
        }
        Some("Complaint") => {
            let c = n.complaint.ok_or(NotificationError::NoComplaint)?;
            // A "not-spam" report undoes nothing and changes nothing.
            let kind = (c.complaint_feedback_type.as_deref() != Some("not-spam"))
                .then_some(EventKind::Complaint);
            Ok(c.complained_recipients
                .iter()
                .map(|r| ProviderEvent {
                    key: key(&c.feedback_id, &r.email_address),
                    message_ids: message_ids.clone(),
                    recipient: r.email_address.clone(),
                    kind,
                    status: None,
                    diagnostic: c.complaint_feedback_type.clone(),
                })
                .collect())
        }
        Some(_) => Ok(Vec::new()),
        None => Err(NotificationError::NoType),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example of a bounce with a DSN and the original headers.
    const BOUNCE: &str = r#"{
      "notificationType":"Bounce",
      "bounce":{"bounceType":"Permanent","reportingMTA":"dns; email.example.com",
        "bouncedRecipients":[{"emailAddress":"jane@example.com","status":"5.1.1","action":"failed",
          "diagnosticCode":"smtp; 550 5.1.1 <jane@example.com>... User"}],
        "bounceSubType":"General","timestamp":"2016-01-27T14:59:38.237Z",
        "feedbackId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000","remoteMtaIp":"127.0.2.0"},
      "mail":{"timestamp":"2016-01-27T14:59:38.237Z","source":"john@example.com",
        "sourceArn":"arn:aws:ses:us-east-1:888888888888:identity/example.com","sourceIp":"127.0.3.0",
        "sendingAccountId":"123456789012","callerIdentity":"IAM_user_or_role_name",
        "messageId":"00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
        "destination":["jane@example.com","mary@example.com","richard@example.com"],
        "headersTruncated":false,
        "headers":[{"name":"From","value":"\"John Doe\" <john@example.com>"},
          {"name":"To","value":"\"Jane Doe\" <jane@example.com>"},
          {"name":"Message-ID","value":"custom-message-ID"},
          {"name":"Subject","value":"Hello"}],
        "commonHeaders":{"from":["\"John Doe\" <john@example.com>"],"date":"Wed, 27 Jan 2016 14:05:45 +0000",
          "to":["\"Jane Doe\" <jane@example.com>"],"messageId":"custom-message-ID","subject":"Hello"}}
    }"#;

    #[test]
    fn a_documented_permanent_bounce_is_a_hard_bounce_of_our_message_id() {
        let evs = parse(BOUNCE).unwrap();
        assert_eq!(evs.len(), 1);
        let e = &evs[0];
        assert_eq!(e.kind, Some(EventKind::HardBounce));
        assert_eq!(e.recipient, "jane@example.com");
        assert_eq!(e.message_ids[0], "custom-message-ID");
        assert_eq!(e.status.map(|s| s.to_string()).as_deref(), Some("5.1.1"));
        assert_eq!(
            e.key,
            "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000:jane@example.com"
        );
    }

    #[test]
    fn complaints_give_one_event_per_recipient_and_not_spam_changes_nothing() {
        let complaint = |feedback_type: &str| {
            format!(
                r#"{{"notificationType":"Complaint",
                  "complaint":{{"userAgent":"AnyCompany Feedback Loop (V0.01)",
                    "complainedRecipients":[{{"emailAddress":"richard@example.com"}},{{"emailAddress":"mary@example.com"}}],
                    "complaintFeedbackType":"{feedback_type}","arrivalDate":"2016-01-27T14:59:38.237Z",
                    "timestamp":"2016-01-27T14:59:38.237Z","feedbackId":"000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000"}},
                  "mail":{{"messageId":"000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000",
                    "commonHeaders":{{"messageId":"<ours@news.example.com>"}}}}}}"#
            )
        };
        let evs = parse(&complaint("abuse")).unwrap();
        assert_eq!(evs.len(), 2);
        assert!(evs.iter().all(|e| e.kind == Some(EventKind::Complaint)));
        assert_eq!(
            evs[0].message_ids,
            vec![
                "<ours@news.example.com>",
                "000001378603177f-7a5433e7-8edb-42ae-af10-f0181f34d6ee-000000"
            ]
        );
        assert_ne!(evs[0].key, evs[1].key);
        assert!(parse(&complaint("not-spam"))
            .unwrap()
            .iter()
            .all(|e| e.kind.is_none()));
    }

    #[test]
    fn transient_bounces_are_soft_deliveries_give_nothing_and_junk_is_named() {
        let soft = BOUNCE.replace("\"Permanent\"", "\"Transient\"");
        assert_eq!(parse(&soft).unwrap()[0].kind, Some(EventKind::SoftBounce));
        assert!(parse(r#"{"notificationType":"Delivery","mail":{}}"#)
            .unwrap()
            .is_empty());
        let e = parse(r#"{"mail":{}}"#).unwrap_err();
        assert!(matches!(e, NotificationError::NoType), "{e:?}");
        assert!(e.to_string().contains("notificationType"));
        let e = parse(
            r#"{"notificationType":"Bounce","mail":{"commonHeaders":{"messageId":"<a@b>"}}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, NotificationError::NoBounce), "{e:?}");
        assert!(e.to_string().contains("bounce object"));
        // Without the original headers nothing can be matched: the error says what to turn on.
        let bare = r#"{"notificationType":"Bounce","mail":{"messageId":"0100-ses-own"},
            "bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":"a@b.example"}]}}"#;
        let e = parse(bare).unwrap_err();
        assert!(matches!(e, NotificationError::NoOriginalHeaders), "{e:?}");
        assert!(e.to_string().contains("Include original email headers"));
    }

    #[test]
    fn each_unreadable_notification_gives_the_error_of_what_it_lacks() {
        let e = parse("not json").unwrap_err();
        assert!(matches!(e, NotificationError::NotJson { .. }), "{e:?}");
        assert!(e.to_string().starts_with("not an SES notification: "));
        let e = parse(
            r#"{"notificationType":"Complaint","mail":{"commonHeaders":{"messageId":"<a@b>"}}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, NotificationError::NoComplaint), "{e:?}");
        // A complaint without our Message-ID cannot be matched either.
        let e = parse(r#"{"notificationType":"Complaint","mail":{"messageId":"0100-ses-own"}}"#)
            .unwrap_err();
        assert!(matches!(e, NotificationError::NoOriginalHeaders), "{e:?}");
        // A delivery needs no original headers: it gives nothing.
        assert!(
            parse(r#"{"notificationType":"Delivery","mail":{"messageId":"0100"}}"#)
                .unwrap()
                .is_empty()
        );
    }
}
