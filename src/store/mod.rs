//! Subscribers, unsubscribes, sign-ups, the delivery ledger and send leases.
//! One interface split by the code that uses it ([`Subscribers`], [`Signups`],
//! [`Ledger`], [`LedgerHistory`], [`Leases`], [`Runs`], [`IssueStore`],
//! [`BounceStore`]; [`Store`] is all of them) with two backends, SQLite
//! (`sqlite/`, one file per part) and PostgreSQL (`pg.rs`, one database for
//! several machines); all SQL lives in the backend modules, nowhere else.
//! [`open`] picks one from the config.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{LinkKey, Locale, Subscriber, SubscriberEmail, SubscriberStatus};

pub mod copy;
pub mod issues;
pub mod pg;
pub mod run;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;

pub use issues::{Freeze, FrozenIssue, IssueStore};
pub use pg::PgStore;
pub use run::{FailedStep, PartialReason, RunStatus};
pub use sqlite::SqliteStore;

use crate::bounces::{Decision, EventKind, Rules};

/// What a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    /// Another connection held the write lock for longer than the wait allowed:
    /// nothing was written, trying again later will do.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// A variant of the issue of `date` was to be kept before the issue itself
    /// was frozen (its build has not run, or was not kept).
    #[error("the issue of {date} is not frozen: its variant {variant:?} cannot be kept")]
    NotFrozen { date: NaiveDate, variant: String },
    /// `copy` was given a database that already holds data.
    #[error("the target database is not empty: copy into a new database (nothing was written)")]
    TargetNotEmpty,
    /// This backend does not implement the call.
    #[error("this storage backend cannot {0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    Invalid(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

fn unsupported(what: &'static str) -> StoreError {
    StoreError::Unsupported(what)
}

/// One database as [`open`] gives it: the [`Store`], plus copying it whole.
pub trait Backend: Store + copy::Copyable {
    /// The schema version applied to the database.
    fn schema_version(&self) -> StoreResult<i64>;
}

impl Backend for SqliteStore {
    fn schema_version(&self) -> StoreResult<i64> {
        SqliteStore::schema_version(self)
    }
}

impl Backend for PgStore {
    fn schema_version(&self) -> StoreResult<i64> {
        PgStore::schema_version(self)
    }
}

/// Which database `[storage] database` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (`sqlite://PATH`).
    SqliteFile(std::path::PathBuf),
    /// A private in-memory SQLite database (`sqlite::memory:`).
    SqliteMemory,
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`), as written.
    Postgres(String),
}

impl Location {
    /// `sqlite://PATH` (relative to the working folder), `sqlite::memory:` or
    /// `postgres://…`, as `--from` and `--to` take them.
    pub fn parse(s: &str) -> Result<Location, LocationError> {
        if crate::config::is_postgres_url(s) {
            return Ok(Location::Postgres(s.to_string()));
        }
        let given = || s.to_string();
        match s.strip_prefix("sqlite:") {
            Some(":memory:") => Ok(Location::SqliteMemory),
            Some(rest) if !rest.trim_start_matches("//").is_empty() => Ok(Location::SqliteFile(
                std::path::PathBuf::from(rest.strip_prefix("//").unwrap_or(rest)),
            )),
            Some(_) => Err(LocationError::NoFile { given: given() }),
            None => Err(LocationError::Unknown { given: given() }),
        }
    }
}

/// Why a `--from` or `--to` names no database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    /// `sqlite:` without a file.
    #[error("{given:?} names no file: write sqlite://PATH (or sqlite::memory:)")]
    NoFile { given: String },
    /// Neither SQLite nor PostgreSQL.
    #[error(
        "{given:?} names no database: write sqlite://PATH or postgres://user@host:port/database"
    )]
    Unknown { given: String },
}

impl Location {
    /// Whether several processes may send one issue together (PostgreSQL); on
    /// SQLite one process at a time sends it.
    pub fn shares_sending(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::SqliteFile(p) => write!(f, "sqlite://{}", p.display()),
            Location::SqliteMemory => f.write_str("sqlite::memory:"),
            Location::Postgres(url) => f.write_str(&pg::place_of(url)),
        }
    }
}

/// Opens the database at `at`, bringing its schema up to date (and refusing one
/// newer than this binary). Only the commands that write may: `check` and the
/// others that look without writing use [`open_current_at`].
pub fn open_at(at: &Location) -> StoreResult<std::sync::Arc<dyn Backend>> {
    Ok(match at {
        Location::SqliteFile(p) => std::sync::Arc::new(SqliteStore::open(p)?),
        Location::SqliteMemory => std::sync::Arc::new(SqliteStore::open_in_memory()?),
        Location::Postgres(url) => std::sync::Arc::new(PgStore::open(url)?),
    })
}

/// Opens the database of `[storage] database`.
pub fn open(cfg: &crate::config::Config) -> StoreResult<std::sync::Arc<dyn Backend>> {
    open_at(&cfg.database())
}

/// Opens the database at `at` as it is, never migrating: refused unless its
/// schema is current ([`Schema::require_current`] says what to run). With
/// `Access::ReadOnly`, nothing can be written through it either (PostgreSQL:
/// a read-only session; SQLite: `query_only`), and a SQLite file that is not
/// there is not created.
pub fn open_current_at(at: &Location, access: Access) -> StoreResult<std::sync::Arc<dyn Backend>> {
    Ok(match at {
        Location::SqliteFile(p) => std::sync::Arc::new(SqliteStore::open_current(p, access)?),
        // A private database, new at each open: nothing outlives the command.
        Location::SqliteMemory => std::sync::Arc::new(SqliteStore::open_in_memory()?),
        Location::Postgres(url) => std::sync::Arc::new(PgStore::open_current(url, access)?),
    })
}

/// The schema of the database at `at`, read without changing anything: no
/// migration, no table, no file created.
pub fn schema_at(at: &Location) -> StoreResult<Schema> {
    match at {
        Location::SqliteFile(p) => SqliteStore::schema_of(p),
        // Made current at each open, and gone at its end.
        Location::SqliteMemory => Ok(Schema::Current {
            version: SqliteStore::latest_schema(),
        }),
        Location::Postgres(url) => PgStore::schema_of(url),
    }
}

/// What a store opened without migrating may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only: `check`.
    ReadOnly,
    /// Read and write, on a schema already current: the commands that freeze
    /// the issue they show but must not migrate (`preview`, `lint`, `send --dry-run`).
    ReadWrite,
}

/// Whether opening a database brings its schema up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    Migrate,
    /// As it is, refused unless its schema is current.
    AsItIs(Access),
}

/// A database's schema as this binary sees it, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// The SQLite file is not there: `digestif migrate` (or the first
    /// command that writes) creates it.
    NoFile(std::path::PathBuf),
    /// The database holds no schema at all: a new, empty one.
    Empty,
    /// Every migration this binary knows is applied.
    Current { version: i64 },
    /// Some migrations this binary applies are not: `pending` names them
    /// (`0007_ledger_state_unindexed`), in order.
    Behind {
        version: i64,
        latest: i64,
        pending: Vec<String>,
    },
    /// Migrated by a newer digestif than this one.
    Newer { version: i64, latest: i64 },
}

impl Schema {
    /// The schema of a database that recorded the versions `applied` (`None`:
    /// no `schema_migrations` table), against the migrations `known` to this
    /// binary, in order. A known version missing below the highest applied
    /// (two branches each adding one) is pending too.
    pub(crate) fn of<'a>(
        applied: Option<&[i64]>,
        known: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Schema {
        let Some(applied) = applied.filter(|a| !a.is_empty()) else {
            return Schema::Empty;
        };
        let known: Vec<(i64, &str)> = known.into_iter().collect();
        let version = applied.iter().copied().max().unwrap_or(0);
        let latest = known.last().map_or(0, |k| k.0);
        if version > latest {
            return Schema::Newer { version, latest };
        }
        let pending: Vec<String> = known
            .iter()
            .filter(|(v, _)| !applied.contains(v))
            .map(|(v, name)| format!("{v:04}_{name}"))
            .collect();
        if pending.is_empty() {
            Schema::Current { version }
        } else {
            Schema::Behind {
                version,
                latest,
                pending,
            }
        }
    }

    /// Ok if current; else what is wrong and what to run.
    pub fn require_current(&self) -> StoreResult<()> {
        let why = match self {
            Schema::Current { .. } => return Ok(()),
            Schema::NoFile(p) => format!(
                "there is no database file {}: run `digestif migrate` to create it",
                p.display()
            ),
            Schema::Empty => {
                "the database holds no schema yet: run `digestif migrate` to create it".to_string()
            }
            Schema::Behind {
                version,
                latest,
                pending,
            } => format!(
                "the database has schema version {version}, this digestif applies up to \
                 {latest}: run `digestif migrate` ({} pending: {})",
                pending.len(),
                pending.join(", ")
            ),
            Schema::Newer { version, latest } => format!(
                "the database has schema version {version}, newer than this digestif knows \
                 ({latest}): upgrade digestif"
            ),
        };
        Err(StoreError::Invalid(why))
    }
}

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
    /// Not added: the address was removed or forgotten earlier (see [`Suppression`]).
    Suppressed,
}

/// Why an address that is no longer a subscriber must not be added back by an
/// import or `subscribers add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    /// They unsubscribed, then the row was removed: only their own confirmed
    /// sign-up brings them back.
    Unsubscribed,
    /// Hard-bounced, then removed.
    Bounced,
    /// Removed by the operator while subscribed.
    Removed,
    /// `subscribers forget`: their data was erased on request.
    Forgotten,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Unsubscribed => "unsubscribed",
            SuppressionReason::Bounced => "bounced",
            SuppressionReason::Removed => "removed",
            SuppressionReason::Forgotten => "forgotten",
        }
    }

    /// Whether only the person (a confirmed sign-up) may lift it, not the operator.
    pub fn is_the_persons_choice(self) -> bool {
        matches!(
            self,
            SuppressionReason::Unsubscribed | SuppressionReason::Forgotten
        )
    }
}

/// A suppression reason the database holds that this binary does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown suppression reason {0:?}")]
pub struct UnknownSuppressionReason(pub String);

impl std::str::FromStr for SuppressionReason {
    type Err = UnknownSuppressionReason;
    fn from_str(s: &str) -> Result<Self, UnknownSuppressionReason> {
        Ok(match s {
            "unsubscribed" => SuppressionReason::Unsubscribed,
            "bounced" => SuppressionReason::Bounced,
            "removed" => SuppressionReason::Removed,
            "forgotten" => SuppressionReason::Forgotten,
            other => return Err(UnknownSuppressionReason(other.to_string())),
        })
    }
}

impl std::fmt::Display for SuppressionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record kept of a removed address: only a keyed hash of it, why and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppression {
    pub reason: SuppressionReason,
    pub at: DateTime<Utc>,
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

/// One sending process, as the ledger rows it holds and its heartbeat name it
/// (random per process: two processes never share one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder(String);

impl Holder {
    pub fn new(name: impl Into<String>) -> Holder {
        Holder(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A sender of an issue and its last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSeen {
    pub holder: Holder,
    pub last_seen: DateTime<Utc>,
}

/// The ledger rows of one issue a sender holds or sent ([`LedgerHistory::ledger_by_sender`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderRows {
    pub holder: Holder,
    /// `pending`: claimed, not yet marked; `sending`: in flight; `sent`,
    /// `failed`: done by this sender.
    pub rows: LedgerCounts,
}

/// What [`Ledger::ledger_take_over`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TakeOver {
    /// Rows the gone senders left in `sending`, now the caller's (still in
    /// `sending`, `in_doubt`): resend them once.
    pub in_doubt: Vec<Delivery>,
    /// Pending rows of the gone senders, free to claim again.
    pub released: u64,
    /// Rows other (live) senders still hold, pending or sending: not finished yet.
    pub held_elsewhere: u64,
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

/// The whole storage interface: every part below, as both backends implement
/// them and as the commands and the service hold them (`Arc<dyn Store>`).
/// Code that needs one part takes only that part (the send loop a [`Ledger`],
/// the issue lease [`Leases`]), so a test double implements only what its test
/// uses. Sync on purpose: async callers use `spawn_blocking`. Implementations
/// must be safe to share between threads and processes (two `serve` processes
/// on one database).
pub trait Store:
    Subscribers + Signups + Ledger + LedgerHistory + Leases + Runs + IssueStore + BounceStore
{
}

impl<T> Store for T where
    T: Subscribers
        + Signups
        + Ledger
        + LedgerHistory
        + Leases
        + Runs
        + IssueStore
        + BounceStore
        + ?Sized
{
}

/// `issues()` and `bounces()`: the part of the store a caller hands on to code
/// that takes only that part (every [`Store`] keeps both).
macro_rules! parts_of {
    ($t:ty) => {
        impl<'a> $t {
            /// The bounces and complaints kept by this store.
            pub fn bounces(&self) -> &dyn BounceStore {
                self
            }

            /// The frozen issues kept by this store.
            pub fn issues(&self) -> &dyn IssueStore {
                self
            }
        }
    };
}
parts_of!(dyn Store + 'a);
parts_of!(dyn Backend + 'a);

/// The subscribers: imports, the CLI, sign-up confirmations and the
/// unsubscribe and preference pages.
pub trait Subscribers: Send + Sync {
    /// Inserts or updates by address (letter case does not count). An address whose
    /// status is `unsubscribed` stays unsubscribed whatever `new.status` says; a
    /// suppressed address is not inserted ([`Upserted::Suppressed`]).
    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted>;
    /// Upserts many in one transaction, same rules; returns one outcome per row.
    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>>;
    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>>;
    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>>;
    /// Deletes the subscriber, their ledger rows and pending sign-up, keeping a
    /// suppression record (reason from their status); false if unknown.
    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool>;
    /// Erases everything personal about `email` (subscriber, ledger rows, sign-up)
    /// and keeps only the keyed hash, reason "forgotten". Whether anything was found.
    fn forget_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let _ = email;
        Err(unsupported("forget a subscriber"))
    }
    /// The suppression record of `email`, if it was removed or forgotten.
    fn suppression(&self, email: &SubscriberEmail) -> StoreResult<Option<Suppression>> {
        let _ = email;
        Err(unsupported("read suppressions"))
    }
    /// Drops the suppression of `email` (a confirmed sign-up, or the operator
    /// re-adding a removed or bounced address); whether there was one.
    fn lift_suppression(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let _ = email;
        Err(unsupported("lift a suppression"))
    }
    /// The subscriber whose links name `key`.
    fn subscriber_by_link_key(&self, key: &LinkKey) -> StoreResult<Option<Subscriber>> {
        let _ = key;
        Err(unsupported("find a subscriber by link key"))
    }
    /// The subscriber with row id `id`, only if the row existed before links named
    /// keys (older links name ids; a row added since never answers to one).
    fn subscriber_by_legacy_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        let _ = id;
        Err(unsupported("find a subscriber by an old link"))
    }
    /// Sets the status, recording why and when; returns false if the id is unknown.
    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Sets the subscriber's language and followed sections (an empty list: none,
    /// every section in the issue's order). Their status is left as it is.
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
}

/// Sign-ups waiting for their confirmation (double opt-in): the subscribe pages.
pub trait Signups: Send + Sync {
    /// Stores or refreshes a pending sign-up; does not touch an existing subscriber.
    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()>;
    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>>;
    /// Whether a confirmation mail may go to `email` now: true at most once per
    /// `cooldown` for a stored sign-up (recording `now` as its last mail).
    fn claim_confirmation_mail(
        &self,
        email: &SubscriberEmail,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> StoreResult<bool> {
        let _ = (email, now, cooldown);
        Err(unsupported("pace confirmation mails"))
    }
    /// Deletes the sign-ups requested before `before` and never confirmed; how many.
    fn purge_signups(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let _ = before;
        Err(unsupported("purge sign-ups"))
    }
}

/// The delivery ledger as the send loop uses it: one row per (issue date,
/// subscriber), the senders of an issue (their heartbeats), claims, marks,
/// outcomes and takeovers.
pub trait Ledger: Send + Sync {
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
    /// [`Ledger::ledger_record_and_mark`] just before its message ends.
    fn ledger_next(&self, date: NaiveDate, after: i64, limit: usize) -> StoreResult<Vec<Delivery>>;
    /// In one transaction: records `outcomes` (as [`Ledger::ledger_record`]), then
    /// moves each row of `marks` from pending to sending, held by `holder`. Per
    /// mark, whether it moved: not if the row is no longer pending, or another
    /// sender holds it, or its subscriber is no longer active (then the row is
    /// dropped).
    fn ledger_record_and_mark(
        &self,
        date: NaiveDate,
        holder: &Holder,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>>;

    // several senders on one issue (the ledger rows they hold, their heartbeats)
    /// `holder` sends the issue of `date` and is alive at `now` (its heartbeat).
    fn sender_seen(&self, date: NaiveDate, holder: &Holder, now: DateTime<Utc>) -> StoreResult<()>;
    /// The senders of `date` and when each was last heard from.
    fn senders(&self, date: NaiveDate) -> StoreResult<Vec<SenderSeen>>;
    /// Claims for `holder` up to `limit` pending rows of `date` that no sender
    /// holds, in subscriber order, skipping rows another sender is claiming at
    /// the same moment (`FOR UPDATE SKIP LOCKED`). They stay pending: each goes
    /// to `sending` only at its mark ([`Ledger::ledger_record_and_mark`]). Rows of
    /// subscribers no longer active are dropped on the way. Fewer than `limit`:
    /// no free row is left.
    fn ledger_claim_for(
        &self,
        date: NaiveDate,
        holder: &Holder,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>>;
    /// In one transaction: the rows of senders that are gone (those named in
    /// `gone`, and any holder without a heartbeat row) are taken over. Their
    /// `sending` rows (and `sending` rows nobody holds) become `holder`'s and are
    /// returned in doubt; their pending rows are released. The heartbeats of
    /// `gone` are deleted.
    fn ledger_take_over(
        &self,
        date: NaiveDate,
        holder: &Holder,
        gone: &[Holder],
        now: DateTime<Utc>,
    ) -> StoreResult<TakeOver>;
    /// Releases the pending rows `holder` claimed (for any sender to claim
    /// again); its rows in `sending` stay its own.
    fn ledger_release(&self, date: NaiveDate, holder: &Holder) -> StoreResult<()>;
    /// `holder` stops sending: its heartbeat is deleted (rows it left in
    /// `sending` are then taken over by the next sender, in doubt).
    fn sender_left(&self, holder: &Holder) -> StoreResult<()>;
    fn ledger_counts(&self, date: NaiveDate) -> StoreResult<LedgerCounts>;
    /// Like [`Ledger::ledger_enqueue`], for the active subscribers whose own time zone
    /// (IANA name) is in `zones`, and those without one when `with_unzoned`: the
    /// scheduler's send passes that follow the sun.
    fn ledger_enqueue_in_zones(
        &self,
        date: NaiveDate,
        zones: &[String],
        with_unzoned: bool,
    ) -> StoreResult<u64> {
        let _ = (date, zones, with_unzoned);
        Err(unsupported("enqueue by time zone"))
    }
    /// Whether each call waits on a server across a connection (PostgreSQL)
    /// rather than on work in this process (SQLite): the send loop then makes
    /// its calls off the thread that drives the SMTP connections, so they go on
    /// during the round trip.
    fn across_a_connection(&self) -> bool {
        false
    }
}

/// What the ledger kept of sends, for `digestif ledger` and the reports
/// (failures, dates, the rows of each sender).
pub trait LedgerHistory: Send + Sync {
    /// The rows of `date` by the sender that holds or sent them, by holder name.
    fn ledger_by_sender(&self, date: NaiveDate) -> StoreResult<Vec<SenderRows>>;
    /// (address, last error) of failed rows.
    fn ledger_failures(&self, date: NaiveDate) -> StoreResult<Vec<(String, String)>>;
    /// Dates present in the ledger, newest first.
    fn ledger_dates(&self) -> StoreResult<Vec<NaiveDate>>;
}

/// Leases: one worker per issue date across processes.
pub trait Leases: Send + Sync {
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
}

/// The scheduler's runs, for health and metrics.
pub trait Runs: Send + Sync {
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
    pub status: RunStatus,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub in_doubt: u64,
    pub message: String,
}

/// A bounce or complaint to keep, matched to its subscriber and issue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBounceEvent {
    /// Names the returned message: the same one read twice has the same key.
    pub report_key: String,
    pub subscriber_id: i64,
    pub issue: NaiveDate,
    pub kind: EventKind,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    /// Where it was read and in which form.
    pub source: String,
    pub at: DateTime<Utc>,
}

/// What recording a bounce or complaint did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BounceRecorded {
    /// This returned message was recorded before: nothing changed.
    Duplicate,
    /// The tag names no subscriber (removed or forgotten since): nothing kept.
    UnknownSubscriber,
    /// Kept; the subscriber changed as the rules decided.
    Recorded(Decision),
}

/// One kept event, as `subscribers show` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceEvent {
    pub at: DateTime<Utc>,
    pub issue: NaiveDate,
    pub kind: EventKind,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub source: String,
}

/// Subscribers of one issue by what came back (each counted once per kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BounceCounts {
    pub hard_bounces: u64,
    pub soft_bounces: u64,
    pub complaints: u64,
}

/// Bounces and complaints: the bounce readers, the webhooks and the reports.
pub trait BounceStore: Send + Sync {
    /// In one transaction: nothing if `event.report_key` is already kept; else keeps
    /// the event, counts the subscriber's soft bounces within `rules`' window (this
    /// one included) and applies what `rules` decide.
    fn record_bounce(&self, event: &NewBounceEvent, rules: &Rules) -> StoreResult<BounceRecorded>;
    /// The events of one subscriber, oldest first.
    fn bounce_events(&self, subscriber_id: i64) -> StoreResult<Vec<BounceEvent>>;
    /// Who bounced or complained about the issue of `date`.
    fn bounce_counts(&self, date: NaiveDate) -> StoreResult<BounceCounts>;
    /// Events kept, by kind (for `/metrics`).
    fn bounce_totals(&self) -> StoreResult<Vec<(EventKind, u64)>>;
    /// The ledger row of the message with `message_id` (with or without its angle
    /// brackets) sent to `email`: (subscriber id, issue date). Both must match: a
    /// provider's report names the address, and an address alone proves nothing.
    fn sent_message(
        &self,
        message_id: &str,
        email: &crate::domain::SubscriberEmail,
    ) -> StoreResult<Option<(i64, NaiveDate)>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_names_a_database_or_says_which_part_is_missing() {
        assert_eq!(
            Location::parse("sqlite://data/d.db"),
            Ok(Location::SqliteFile("data/d.db".into()))
        );
        assert_eq!(
            Location::parse("sqlite::memory:"),
            Ok(Location::SqliteMemory)
        );
        assert_eq!(
            Location::parse("postgres://u@db/d"),
            Ok(Location::Postgres("postgres://u@db/d".into()))
        );
        assert_eq!(
            Location::parse("sqlite://"),
            Err(LocationError::NoFile {
                given: "sqlite://".into()
            })
        );
        let e = Location::parse("mysql://u@db/d").unwrap_err();
        assert_eq!(
            e,
            LocationError::Unknown {
                given: "mysql://u@db/d".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "\"mysql://u@db/d\" names no database: write sqlite://PATH or \
             postgres://user@host:port/database"
        );
    }

    #[test]
    fn a_schema_is_current_behind_with_its_pending_migrations_newer_or_empty() {
        let known = [(1, "init"), (2, "identity"), (3, "bounce_events")];
        assert_eq!(Schema::of(None, known), Schema::Empty);
        assert_eq!(Schema::of(Some(&[]), known), Schema::Empty);
        assert_eq!(
            Schema::of(Some(&[1, 2, 3]), known),
            Schema::Current { version: 3 }
        );
        let behind = Schema::of(Some(&[1]), known);
        assert_eq!(
            behind,
            Schema::Behind {
                version: 1,
                latest: 3,
                pending: vec!["0002_identity".into(), "0003_bounce_events".into()],
            }
        );
        assert_eq!(
            behind.require_current().unwrap_err().to_string(),
            "the database has schema version 1, this digestif applies up to 3: run \
             `digestif migrate` (2 pending: 0002_identity, 0003_bounce_events)"
        );
        // A lower number merged after a higher one was applied is still pending.
        assert_eq!(
            Schema::of(Some(&[1, 3]), known),
            Schema::Behind {
                version: 3,
                latest: 3,
                pending: vec!["0002_identity".into()],
            }
        );
        let newer = Schema::of(Some(&[1, 2, 3, 4]), known);
        assert_eq!(
            newer,
            Schema::Newer {
                version: 4,
                latest: 3
            }
        );
        assert!(newer
            .require_current()
            .unwrap_err()
            .to_string()
            .ends_with("upgrade digestif"));
    }

    #[test]
    fn a_suppression_reason_reads_back_and_an_unknown_one_is_named() {
        use std::str::FromStr;
        for r in [
            SuppressionReason::Unsubscribed,
            SuppressionReason::Bounced,
            SuppressionReason::Removed,
            SuppressionReason::Forgotten,
        ] {
            assert_eq!(SuppressionReason::from_str(r.as_str()), Ok(r));
        }
        let e = SuppressionReason::from_str("spam").unwrap_err();
        assert_eq!(e, UnknownSuppressionReason("spam".into()));
        assert_eq!(e.to_string(), "unknown suppression reason \"spam\"");
    }
}
