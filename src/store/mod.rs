//! Subscribers, unsubscribes, sign-ups, the delivery ledger and send leases.
//! One interface ([`Store`]) so that a PostgreSQL backend can follow; all SQL
//! lives in the backend modules (`sqlite.rs`), nowhere else.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{Locale, Subscriber, SubscriberEmail, SubscriberStatus};

pub mod sqlite;

pub use sqlite::SqliteStore;

/// What a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("{0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A subscriber to add or update (from the CLI, a CSV row or a sign-up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewSubscriber {
    pub email: SubscriberEmail,
    pub name: Option<String>,
    pub locale: Option<Locale>,
    pub categories: Vec<String>,
    pub timezone: Option<chrono_tz::Tz>,
    pub status: SubscriberStatus,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Inserted,
    Updated,
    /// Left as it was (e.g. an unsubscribed address a later import tries to re-activate).
    Unchanged,
}

/// State of one (issue date, subscriber) in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Sending,
    Sent,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One row of the ledger handed to the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub date: NaiveDate,
    pub subscriber: Subscriber,
    pub attempts: u32,
    /// The row was found in `sending` when claimed: a previous process died with it in flight.
    pub in_doubt: bool,
}

/// Outcome recorded for one delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent {
        message_id: String,
    },
    /// Transient: back to pending, to be retried (attempts counted).
    Retry {
        error: String,
    },
    /// Permanent: failed; `hard_bounce` also marks the subscriber bounced.
    Failed {
        error: String,
        hard_bounce: bool,
    },
}

/// Counts by state for one issue date.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerCounts {
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub failed: u64,
}

/// A sign-up waiting for its confirmation click.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingSignup {
    pub subscriber: NewSubscriber,
    pub requested_at: DateTime<Utc>,
}

/// The storage interface. Sync on purpose: async callers use `spawn_blocking`.
/// Implementations must be safe to share between threads and processes
/// (two `serve` processes on one database).
pub trait Store: Send + Sync {
    // ---- subscribers
    /// Inserts or updates by address (case-insensitive domain). An address whose
    /// status is `unsubscribed` stays unsubscribed whatever `new.status` says.
    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted>;
    /// Upserts many in one transaction, same rules; returns one outcome per row.
    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>>;
    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>>;
    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>>;
    /// Deletes the subscriber and their ledger rows; false if unknown.
    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool>;
    /// Sets the status, recording why and when; returns false if the id is unknown.
    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Sets the subscriber's language and followed sections (an empty list: none,
    /// every section in the order). Their status is left as it is.
    /// Whether the subscriber exists.
    fn set_preferences(
        &self,
        id: i64,
        locale: Option<Locale>,
        categories: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// A page of subscribers with `id > after_id`, ordered by id (a resumable cursor).
    fn subscribers_page(
        &self,
        status: Option<SubscriberStatus>,
        after_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<Subscriber>>;
    fn count_by_status(&self) -> StoreResult<Vec<(SubscriberStatus, u64)>>;

    // ---- sign-ups (double opt-in)
    /// Stores or refreshes a pending sign-up; does not touch an existing subscriber.
    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()>;
    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>>;

    // ---- ledger
    /// Adds a `pending` row for every active subscriber not yet in the ledger for `date`
    /// (optionally only those whose id ≤ `max_id`). Returns how many were added.
    fn ledger_enqueue(&self, date: NaiveDate, max_id: Option<i64>) -> StoreResult<u64>;
    /// Atomically moves up to `limit` rows of `date` from pending (and, once per run,
    /// from sending: `include_in_doubt`) to sending, skipping subscribers no longer active.
    fn ledger_claim(
        &self,
        date: NaiveDate,
        limit: usize,
        include_in_doubt: bool,
    ) -> StoreResult<Vec<Delivery>>;
    /// Records outcomes in one transaction.
    fn ledger_record(
        &self,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Reads up to `limit` pending rows of `date` whose subscriber id is above
    /// `after`, in id order, without changing them (rows of subscribers no longer
    /// active are dropped from the ledger on the way). Fewer than `limit`: there
    /// are no more. The send loop reads ahead with this, then marks each row with
    /// [`Store::ledger_record_and_mark`] just before its message ends.
    fn ledger_next(&self, date: NaiveDate, after: i64, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// In one transaction: records `outcomes` (as [`Store::ledger_record`]), then
    /// moves each row of `marks` from pending to sending. Per mark, whether it
    /// moved: not if the row is no longer pending (another sender took it) or its
    /// subscriber is no longer active (then the row is dropped).
    fn ledger_record_and_mark(
        &self,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>>;
    fn ledger_counts(&self, date: NaiveDate) -> StoreResult<LedgerCounts>;
    /// (address, last error) of failed rows.
    fn ledger_failures(&self, date: NaiveDate) -> StoreResult<Vec<(String, String)>>;
    /// Dates present in the ledger, newest first.
    fn ledger_dates(&self) -> StoreResult<Vec<NaiveDate>>;
    /// Like [`Store::ledger_enqueue`], for the active subscribers whose own time zone
    /// (IANA name) is in `zones`, and those without one when `with_unzoned`: the
    /// scheduler's send passes that follow the sun.
    fn ledger_enqueue_in_zones(
        &self,
        date: NaiveDate,
        zones: &[String],
        with_unzoned: bool,
    ) -> StoreResult<u64> {
        let _ = (date, zones, with_unzoned);
        Err(StoreError::Invalid(
            "this storage backend cannot enqueue by time zone".into(),
        ))
    }

    // ---- leases: one worker per issue date across processes
    /// Takes or renews the lease `name` for `holder` until `until`; false if another holder has it.
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool>;
    fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// Who holds the lease `name` now (expired or not), if anyone.
    fn lease_holder(&self, name: &str) -> StoreResult<Option<String>>;

    // ---- runs (for health and metrics)
    fn record_run(&self, run: &RunRecord) -> StoreResult<()>;
    fn last_run(&self) -> StoreResult<Option<RunRecord>>;
    /// Whether the store answers (health check).
    fn ping(&self) -> StoreResult<()>;
}

/// A finished (or failed) scheduled or manual run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub date: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// "ok", "partial" (some left pending), "failed", "skipped".
    pub status: String,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub in_doubt: u64,
    pub message: String,
}
