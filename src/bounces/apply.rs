//! One returned message through the whole path: read, matched to its subscriber by
//! the signed VERP tag, kept, and applied by the rules. The run's [`Summary`] counts
//! every outcome, the ones that changed nothing included.

use std::fmt;

use chrono::{DateTime, Utc};

use super::{parse, Decision, EventKind, ReturnPath, Rules, TagCheck};
use crate::config::Secret;
use crate::store::{BounceRecorded, BounceStore, NewBounceEvent, StoreResult};

/// What reading one message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Kept for the subscriber; `decision` says what changed for them.
    Recorded {
        subscriber_id: i64,
        kind: EventKind,
        decision: Decision,
    },
    /// This message was read before: nothing changed.
    Duplicate,
    /// Neither a bounce nor a complaint (an auto-reply, a not-spam report).
    NotAReport,
    /// A report without a tag of ours: it cannot be matched to anyone.
    Unsigned,
    /// A tag of our form whose signature does not match: ignored.
    Forged,
    /// A verified tag naming a subscriber who is no longer in the database.
    UnknownSubscriber(i64),
    /// A provider's report about a message we did not send to that address.
    UnknownMessage {
        message_id: String,
        recipient: String,
    },
    /// Not an email message at all.
    Unreadable(String),
}

impl Outcome {
    /// Whether the message changed nothing for a reason the operator should see.
    pub fn is_suspect(&self) -> bool {
        matches!(
            self,
            Outcome::Unsigned
                | Outcome::Forged
                | Outcome::UnknownSubscriber(_)
                | Outcome::UnknownMessage { .. }
                | Outcome::Unreadable(_)
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Recorded {
                subscriber_id,
                kind,
                decision,
            } => {
                write!(f, "{kind} for subscriber {subscriber_id}")?;
                match decision {
                    Decision::NoChange => Ok(()),
                    Decision::Bounce(r) => write!(f, ": marked bounced ({r})"),
                    Decision::Unsubscribe(r) => write!(f, ": unsubscribed ({r})"),
                }
            }
            Outcome::Duplicate => f.write_str("already read: counted once"),
            Outcome::NotAReport => f.write_str("not a bounce or complaint: ignored"),
            Outcome::Unsigned => {
                f.write_str("no signed return-path tag: matches no subscriber, ignored")
            }
            Outcome::Forged => f.write_str("return-path tag does not verify: ignored"),
            Outcome::UnknownSubscriber(id) => {
                write!(
                    f,
                    "tag names subscriber {id}, who is not in the database: ignored"
                )
            }
            Outcome::UnknownMessage {
                message_id,
                recipient,
            } => write!(
                f,
                "no message {message_id:?} was sent to {recipient:?}: matches no subscriber, ignored"
            ),
            Outcome::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// What a returned message is checked and kept with.
pub struct Handler<'a> {
    pub return_path: &'a ReturnPath,
    pub secret: &'a Secret,
    pub rules: Rules,
    pub store: &'a dyn BounceStore,
}

impl Handler<'_> {
    /// Reads `raw` (from `source`, e.g. `stdin` or a Maildir file) at `now`.
    /// Only a store failure is an error: the message should then be read again.
    pub fn handle(&self, raw: &[u8], source: &str, now: DateTime<Utc>) -> StoreResult<Outcome> {
        let parsed = match parse(raw) {
            Ok(p) => p,
            Err(e) => return Ok(Outcome::Unreadable(e.to_string())),
        };
        let Some(event) = parsed.report.event() else {
            return Ok(Outcome::NotAReport);
        };
        let tag = match self.return_path.find(self.secret, &parsed.tag_candidates) {
            TagCheck::Verified(t) => t,
            TagCheck::Forged => return Ok(Outcome::Forged),
            TagCheck::NotOurs => return Ok(Outcome::Unsigned),
        };
        let format = parsed.format.map_or("", |f| f.as_str());
        let recorded = self.store.record_bounce(
            &NewBounceEvent {
                report_key: parsed.key,
                subscriber_id: tag.subscriber_id,
                issue: tag.issue,
                kind: event.kind,
                status: event.status.map(|s| s.to_string()),
                diagnostic: event.diagnostic,
                source: format!("{source} {format}").trim().to_string(),
                at: now,
            },
            &self.rules,
        )?;
        Ok(match recorded {
            BounceRecorded::Duplicate => Outcome::Duplicate,
            BounceRecorded::UnknownSubscriber => Outcome::UnknownSubscriber(tag.subscriber_id),
            BounceRecorded::Recorded(decision) => Outcome::Recorded {
                subscriber_id: tag.subscriber_id,
                kind: event.kind,
                decision,
            },
        })
    }
}

/// Counts of one run, printed as one line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub read: u64,
    pub hard_bounces: u64,
    pub soft_bounces: u64,
    pub complaints: u64,
    /// Delays and successes: kept, change nothing.
    pub delays: u64,
    pub bounced: u64,
    pub unsubscribed: u64,
    pub duplicates: u64,
    pub not_reports: u64,
    pub unsigned: u64,
    pub forged: u64,
    pub unknown: u64,
    pub unreadable: u64,
    /// Messages left to read again (the store failed).
    pub failed: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Outcome) {
        self.read += 1;
        match o {
            Outcome::Recorded { kind, decision, .. } => {
                match kind {
                    EventKind::HardBounce => self.hard_bounces += 1,
                    EventKind::SoftBounce => self.soft_bounces += 1,
                    EventKind::Complaint => self.complaints += 1,
                    EventKind::Delayed | EventKind::Delivered => self.delays += 1,
                }
                match decision {
                    Decision::NoChange => {}
                    Decision::Bounce(_) => self.bounced += 1,
                    Decision::Unsubscribe(_) => self.unsubscribed += 1,
                }
            }
            Outcome::Duplicate => self.duplicates += 1,
            Outcome::NotAReport => self.not_reports += 1,
            Outcome::Unsigned => self.unsigned += 1,
            Outcome::Forged => self.forged += 1,
            Outcome::UnknownSubscriber(_) | Outcome::UnknownMessage { .. } => self.unknown += 1,
            Outcome::Unreadable(_) => self.unreadable += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "read {}: {} hard bounce(s), {} soft bounce(s), {} complaint(s), {} delay or success \
             report(s); {} subscriber(s) bounced, {} unsubscribed; ignored: {} duplicate(s), \
             {} not a report, {} unsigned, {} forged, {} unknown subscriber(s), {} unreadable",
            self.read,
            self.hard_bounces,
            self.soft_bounces,
            self.complaints,
            self.delays,
            self.bounced,
            self.unsubscribed,
            self.duplicates,
            self.not_reports,
            self.unsigned,
            self.forged,
            self.unknown,
            self.unreadable
        )?;
        if self.failed > 0 {
            write!(f, "; {} left to read again", self.failed)?;
        }
        Ok(())
    }
}
