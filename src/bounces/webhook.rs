//! Reports a relay posts over HTTP (Amazon SES through SNS, Postmark): each event
//! is matched to what we sent by the Message-ID we gave the message *and* the
//! address it went to, then kept and applied by the same [`Rules`] as a mailed report.
//!
//! These reports never carry our signed return path, so the ledger is the proof:
//! an address alone matches nothing, and an event about a message we did not send
//! to that address changes nothing and is reported.

use chrono::{DateTime, Utc};

use super::{EventKind, Outcome, Rules, StatusCode};
use crate::domain::SubscriberEmail;
use crate::store::{BounceRecorded, BounceStore, NewBounceEvent, StoreResult};

/// Who posted the report: also the event's `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Ses = 0,
    Postmark = 1,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ses => "ses",
            Provider::Postmark => "postmark",
        }
    }
}

/// One recipient's bounce or complaint as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    /// Names the event at the provider: a retried delivery has the same key.
    pub key: String,
    /// The Message-IDs the report gives for the message, most specific first
    /// (ours, if the provider kept it).
    pub message_ids: Vec<String>,
    /// The address the report is about, as written there.
    pub recipient: String,
    /// `None`: a kind of report that is neither a bounce nor a complaint
    /// (a delivery, an auto-reply, a "not spam" report).
    pub kind: Option<EventKind>,
    pub status: Option<StatusCode>,
    pub diagnostic: Option<String>,
}

/// Longest diagnostic kept from a provider's report.
const MAX_DIAGNOSTIC: usize = 500;

/// Matches `ev` to the message we sent and keeps it at `now`. Only a store
/// failure is an error (the provider then retries).
pub fn record(
    store: &dyn BounceStore,
    rules: &Rules,
    provider: Provider,
    ev: &ProviderEvent,
    now: DateTime<Utc>,
) -> StoreResult<Outcome> {
    let Some(kind) = ev.kind else {
        return Ok(Outcome::NotAReport);
    };
    let Ok(email) = SubscriberEmail::parse(ev.recipient.trim()) else {
        return Ok(Outcome::UnknownMessage {
            message_id: ev.message_ids.first().cloned().unwrap_or_default(),
            recipient: ev.recipient.clone(),
        });
    };
    let mut sent = None;
    for id in &ev.message_ids {
        if let Some(found) = store.sent_message(id, &email)? {
            sent = Some(found);
            break;
        }
    }
    let Some((subscriber_id, issue)) = sent else {
        return Ok(Outcome::UnknownMessage {
            message_id: ev.message_ids.first().cloned().unwrap_or_default(),
            recipient: ev.recipient.clone(),
        });
    };
    let diagnostic = ev.diagnostic.as_ref().map(|d| {
        let d = d.trim();
        match d.char_indices().nth(MAX_DIAGNOSTIC) {
            Some((i, _)) => d[..i].to_string(),
            None => d.to_string(),
        }
    });
    let recorded = store.record_bounce(
        &NewBounceEvent {
            report_key: format!("{}:{}", provider.as_str(), ev.key),
            subscriber_id,
            issue,
            kind,
            status: ev.status.map(|s| s.to_string()),
            diagnostic,
            source: provider.as_str().to_string(),
            at: now,
        },
        rules,
    )?;
    Ok(match recorded {
        BounceRecorded::Duplicate => Outcome::Duplicate,
        BounceRecorded::UnknownSubscriber => Outcome::UnknownSubscriber(subscriber_id),
        BounceRecorded::Recorded(decision) => Outcome::Recorded {
            subscriber_id,
            kind,
            decision,
        },
    })
}

/// What a webhook request did, one line per event, for the log and the answer.
pub fn describe(outcomes: &[Outcome]) -> String {
    if outcomes.is_empty() {
        return "no bounce or complaint in this report\n".into();
    }
    outcomes.iter().map(|o| format!("{o}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberStatus;
    use crate::store::{DeliveryOutcome, Ledger, NewSubscriber, SqliteStore, Subscribers};
    use chrono::{NaiveDate, TimeZone};

    fn sent_store() -> (SqliteStore, i64, NaiveDate) {
        let s = SqliteStore::open_in_memory().unwrap();
        let email = SubscriberEmail::parse("Jane@Example.com").unwrap();
        s.upsert_subscriber(&NewSubscriber {
            email: email.clone(),
            name: None,
            locale: None,
            categories: vec![],
            timezone: None,
            status: SubscriberStatus::Active,
        })
        .unwrap();
        let id = s.subscriber_by_email(&email).unwrap().unwrap().id;
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        s.ledger_enqueue(date, None).unwrap();
        s.ledger_claim(date, 10, false).unwrap();
        s.ledger_record(
            date,
            &[(
                id,
                DeliveryOutcome::Sent {
                    message_id: "abc@news.example.com".into(),
                },
            )],
            Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap(),
        )
        .unwrap();
        (s, id, date)
    }

    fn hard(recipient: &str, mid: &str) -> ProviderEvent {
        ProviderEvent {
            key: "f1".into(),
            message_ids: vec!["<ses-own-id@amazonses.com>".into(), mid.into()],
            recipient: recipient.into(),
            kind: Some(EventKind::HardBounce),
            status: StatusCode::parse("5.1.1"),
            diagnostic: Some("smtp; 550 5.1.1 user unknown".into()),
        }
    }

    #[test]
    fn an_event_matching_the_message_and_the_address_is_kept_once() {
        let (s, id, _) = sent_store();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 7, 0, 0).unwrap();
        let ev = hard("jane@example.com", "<abc@news.example.com>");
        let o = record(&s, &Rules::default(), Provider::Ses, &ev, now).unwrap();
        assert_eq!(
            o,
            Outcome::Recorded {
                subscriber_id: id,
                kind: EventKind::HardBounce,
                decision: super::super::Decision::Bounce(super::super::rules::REASON_HARD)
            }
        );
        let again = record(&s, &Rules::default(), Provider::Ses, &ev, now).unwrap();
        assert_eq!(again, Outcome::Duplicate);
        let events = s.bounce_events(id).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].source, "ses");
        assert_eq!(events[0].status.as_deref(), Some("5.1.1"));
    }

    #[test]
    fn an_address_without_its_message_or_a_message_to_another_address_changes_nothing() {
        let (s, id, _) = sent_store();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 7, 0, 0).unwrap();
        for ev in [
            hard("jane@example.com", "other@news.example.com"),
            hard("john@example.com", "abc@news.example.com"),
            hard("not an address", "abc@news.example.com"),
        ] {
            let o = record(&s, &Rules::default(), Provider::Postmark, &ev, now).unwrap();
            assert!(
                matches!(o, Outcome::UnknownMessage { .. }) && o.is_suspect(),
                "{o:?}"
            );
        }
        assert!(s.bounce_events(id).unwrap().is_empty());
        assert_eq!(
            s.subscriber_by_id(id).unwrap().unwrap().status,
            SubscriberStatus::Active
        );
    }
}
