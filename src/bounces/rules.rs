//! What a bounce or complaint changes for its subscriber: a pure decision.
//!
//! A permanent failure (5.x.x) bounces the address at once; temporary failures
//! (4.x.x) bounce it once `soft_limit` of them fall within `soft_window`; a
//! complaint unsubscribes at once. Delays and successes change nothing, and
//! nothing brings back an address that already left.

use chrono::{Duration, NaiveDate};

use super::EventKind;
use crate::domain::SubscriberStatus;
use crate::store::BounceCounts;

/// The thresholds, from `[bounces]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub soft_limit: u32,
    pub soft_window: Duration,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            soft_limit: 3,
            soft_window: Duration::days(15),
        }
    }
}

/// The change to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    NoChange,
    /// Mark `bounced`, recording the reason.
    Bounce(&'static str),
    /// Unsubscribe, recording the reason (`complaint`).
    Unsubscribe(&'static str),
}

/// Status reasons recorded on the subscriber.
pub const REASON_HARD: &str = "hard_bounce";
pub const REASON_SOFT: &str = "soft_bounces";
pub const REASON_COMPLAINT: &str = "complaint";

impl Rules {
    /// `soft_in_window`: this subscriber's soft bounces within the window, this one included.
    pub fn decide(
        &self,
        kind: EventKind,
        status: SubscriberStatus,
        soft_in_window: u32,
    ) -> Decision {
        let receiving = matches!(status, SubscriberStatus::Active | SubscriberStatus::Pending);
        match kind {
            EventKind::Complaint if status != SubscriberStatus::Unsubscribed => {
                Decision::Unsubscribe(REASON_COMPLAINT)
            }
            EventKind::HardBounce if receiving => Decision::Bounce(REASON_HARD),
            EventKind::SoftBounce if receiving && soft_in_window >= self.soft_limit => {
                Decision::Bounce(REASON_SOFT)
            }
            _ => Decision::NoChange,
        }
    }
}

/// What came back from one issue, against what it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssueRates {
    pub date: NaiveDate,
    pub sent: u64,
    pub counts: BounceCounts,
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

impl IssueRates {
    pub fn hard_bounce_percent(&self) -> f64 {
        percent(self.counts.hard_bounces, self.sent)
    }

    pub fn complaint_percent(&self) -> f64 {
        percent(self.counts.complaints, self.sent)
    }

    /// What is above `[bounces] max_hard_bounce_percent` / `max_complaint_percent`,
    /// each said for people.
    pub fn over_limits(&self, limits: &crate::config::Bounces) -> Vec<String> {
        let mut out = Vec::new();
        if self.hard_bounce_percent() > limits.max_hard_bounce_percent {
            out.push(format!(
                "the issue of {} hard-bounced for {:.1} % of its {} message(s), above \
                 bounces.max_hard_bounce_percent = {}: check where the addresses come from",
                self.date,
                self.hard_bounce_percent(),
                self.sent,
                limits.max_hard_bounce_percent
            ));
        }
        if self.complaint_percent() > limits.max_complaint_percent {
            out.push(format!(
                "the issue of {} drew complaints from {:.2} % of its {} recipient(s), above \
                 bounces.max_complaint_percent = {} (mailbox providers start filtering \
                 around 0.3 %)",
                self.date,
                self.complaint_percent(),
                self.sent,
                limits.max_complaint_percent
            ));
        }
        out
    }
}

impl std::fmt::Display for IssueRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bounces: {} hard ({:.1} % of {} sent), {} soft; complaints: {} ({:.2} %)",
            self.counts.hard_bounces,
            self.hard_bounce_percent(),
            self.sent,
            self.counts.soft_bounces,
            self.counts.complaints,
            self.complaint_percent()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SubscriberStatus::*;

    #[test]
    fn a_hard_bounce_bounces_a_receiving_address_at_once() {
        let r = Rules::default();
        assert_eq!(
            r.decide(EventKind::HardBounce, Active, 0),
            Decision::Bounce(REASON_HARD)
        );
        assert_eq!(
            r.decide(EventKind::HardBounce, Pending, 0),
            Decision::Bounce(REASON_HARD)
        );
        assert_eq!(
            r.decide(EventKind::HardBounce, Unsubscribed, 0),
            Decision::NoChange
        );
        assert_eq!(
            r.decide(EventKind::HardBounce, Bounced, 0),
            Decision::NoChange
        );
    }

    #[test]
    fn soft_bounces_cross_their_threshold_exactly() {
        let r = Rules {
            soft_limit: 3,
            soft_window: Duration::days(15),
        };
        assert_eq!(
            r.decide(EventKind::SoftBounce, Active, 1),
            Decision::NoChange
        );
        assert_eq!(
            r.decide(EventKind::SoftBounce, Active, 2),
            Decision::NoChange
        );
        assert_eq!(
            r.decide(EventKind::SoftBounce, Active, 3),
            Decision::Bounce(REASON_SOFT)
        );
    }

    #[test]
    fn a_complaint_unsubscribes_even_a_bounced_address() {
        let r = Rules::default();
        for s in [Active, Pending, Bounced] {
            assert_eq!(
                r.decide(EventKind::Complaint, s, 0),
                Decision::Unsubscribe(REASON_COMPLAINT)
            );
        }
        assert_eq!(
            r.decide(EventKind::Complaint, Unsubscribed, 0),
            Decision::NoChange
        );
    }

    #[test]
    fn delays_and_successes_change_nothing() {
        let r = Rules::default();
        for k in [EventKind::Delayed, EventKind::Delivered] {
            assert_eq!(r.decide(k, Active, 99), Decision::NoChange);
        }
    }

    #[test]
    fn rates_above_the_limits_are_named_and_at_the_limit_are_not() {
        let limits = crate::config::Bounces::default();
        let rates = |hard, complaints| IssueRates {
            date: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            sent: 1000,
            counts: BounceCounts {
                hard_bounces: hard,
                soft_bounces: 0,
                complaints,
            },
        };
        assert!(rates(50, 3).over_limits(&limits).is_empty());
        let over = rates(51, 4).over_limits(&limits);
        assert_eq!(over.len(), 2, "{over:?}");
        assert!(over[0].contains("5.1 %"), "{over:?}");
        assert!(
            over[1].contains("bounces.max_complaint_percent"),
            "{over:?}"
        );
        assert_eq!(
            rates(51, 4).to_string(),
            "bounces: 51 hard (5.1 % of 1000 sent), 0 soft; complaints: 4 (0.40 %)"
        );
        let nothing_sent = IssueRates {
            sent: 0,
            ..rates(0, 0)
        };
        assert!(nothing_sent.over_limits(&limits).is_empty());
    }
}
