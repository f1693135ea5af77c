//! The only place that asks the time: everything else is handed "now".

use chrono::{DateTime, Utc};

/// Something that tells the time. Tests hand in a fixed or stepping clock;
/// the binary uses [`SystemClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        #[allow(clippy::disallowed_methods)]
        Utc::now()
    }
}

/// A clock that always answers the same instant (`--now`, tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// Current time from the wall clock, for the edges that have no injected clock.
pub fn now() -> DateTime<Utc> {
    SystemClock.now()
}
