//! What a bounce or complaint changes for its subscriber: a pure decision.
//!
//! A permanent failure (5.x.x) bounces the address at once; temporary failures
//! (4.x.x) bounce it once `soft_limit` of them fall within `soft_window`; a
//! complaint unsubscribes at once. Delays and successes change nothing, and
//! nothing brings back an address that already left.

use chrono::Duration;

use super::EventKind;
use crate::domain::SubscriberStatus;

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
}
