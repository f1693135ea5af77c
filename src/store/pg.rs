//! PostgreSQL backend of [`super::Store`]: one database shared by any number of
//! processes on any number of machines. All its SQL lives here.
//!
//! The sync `postgres` client (the store interface is synchronous) with a small
//! pool of connections of our own. Rows are claimed with `FOR UPDATE SKIP LOCKED`,
//! so that senders on one database never wait for each other nor take the same row;
//! every read-modify-write runs in one transaction.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement};

use super::sqlite::{address_hash, join_categories, split_categories};
use super::{Access, Opening, Schema};
use super::{
    Delivery, DeliveryOutcome, DeliveryState, Holder, Leases, Ledger, LedgerCounts, LedgerHistory,
    NewSubscriber, PendingSignup, RunRecord, RunStatus, Runs, SenderRows, SenderSeen, Signups,
    StoreError, StoreResult, Subscribers, Suppression, SuppressionReason, TakeOver, Upserted,
};
use crate::domain::{LinkKey, Locale, Subscriber, SubscriberEmail, SubscriberStatus};

mod bounces;
mod dump;
mod issues;
pub mod tls;
pub(crate) mod upsert;

/// Schema migrations, applied in order and recorded in `schema_migrations`.
/// Append only. Versions 1 to 5 are SQLite's; 6 and 7 are PostgreSQL's own.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/pg/0001_init.sql")),
    (
        2,
        "identity",
        include_str!("migrations/pg/0002_identity.sql"),
    ),
    (
        3,
        "bounce_events",
        include_str!("migrations/pg/0003_bounce_events.sql"),
    ),
    (4, "senders", include_str!("migrations/pg/0004_senders.sql")),
    (5, "issues", include_str!("migrations/pg/0005_issues.sql")),
    (
        6,
        "ledger_in_place",
        include_str!("migrations/pg/0006_ledger_in_place.sql"),
    ),
    (
        7,
        "ledger_state_unindexed",
        include_str!("migrations/pg/0007_ledger_state_unindexed.sql"),
    ),
];

// The ledger statements of the send find their rows by key: the issue and the
// subscriber ids, given as an array (`= ANY($2)`). A row's state is checked in
// `(…) IS TRUE`, which is not an index condition: otherwise, with the
// statistics of a ledger just enqueued (none, or "few pending rows"), the plan
// kept for the prepared statement walked every pending row of the issue through
// `deliveries_by_state` for each batch (2 ms a call at 20 000 rows, growing
// with the list), where the primary key finds each row at once.

/// A batch of outcomes recorded in one statement: ids, states, errors and
/// Message-IDs as parallel arrays. A row already sent or failed is never moved
/// back. The ids must be distinct (one row updated once per statement).
const RECORD: &str = "UPDATE deliveries d SET state = o.state, attempts = d.attempts + 1,
       last_error = o.error, message_id = COALESCE(o.message_id, d.message_id), updated_at = $6
     FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS o(id, state, error, message_id)
     WHERE d.issue_date = $1 AND d.subscriber_id = ANY($2) AND d.subscriber_id = o.id
       AND (d.state IN ('pending', 'sending')) IS TRUE";

/// Moves rows `$2` from pending to sending for holder `$4` (see [`RECORD`] for
/// `IS TRUE`); the ids of those moved.
const MARK: &str = "UPDATE deliveries d SET state = 'sending', holder = $4, updated_at = $3
     WHERE d.issue_date = $1 AND d.subscriber_id = ANY($2) AND (d.state = 'pending') IS TRUE
       AND (d.holder IS NULL OR d.holder = $4)
       AND EXISTS (SELECT 1 FROM subscribers s WHERE s.id = d.subscriber_id AND s.status = 'active')
     RETURNING d.subscriber_id";

/// Drops rows `$2` still pending whose subscriber is no longer active.
const DROP_GONE: &str = "DELETE FROM deliveries d
     WHERE d.issue_date = $1 AND d.subscriber_id = ANY($2) AND (d.state = 'pending') IS TRUE
       AND NOT EXISTS (SELECT 1 FROM subscribers s
                       WHERE s.id = d.subscriber_id AND s.status = 'active')";

/// [`RECORD`] and [`MARK`] in one statement, one round trip and atomic without
/// BEGIN and COMMIT. The two parts see the same snapshot and must touch
/// distinct rows: the recorded ids are not among the marks. A mark refused
/// (rarely: a reader gone since the claim) is followed by [`DROP_GONE`]; in
/// this statement the drop cost a lookup of every marked row at every call.
const RECORD_AND_MARK: &str = "WITH recorded AS (
         UPDATE deliveries d SET state = o.state, attempts = d.attempts + 1,
           last_error = o.error, message_id = COALESCE(o.message_id, d.message_id),
           updated_at = $6
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[])
           AS o(id, state, error, message_id)
         WHERE d.issue_date = $1 AND d.subscriber_id = ANY($2) AND d.subscriber_id = o.id
           AND (d.state IN ('pending', 'sending')) IS TRUE),
     marked AS (
         UPDATE deliveries d SET state = 'sending', holder = $8, updated_at = $6
         WHERE d.issue_date = $1 AND d.subscriber_id = ANY($7) AND (d.state = 'pending') IS TRUE
           AND (d.holder IS NULL OR d.holder = $8)
           AND EXISTS (SELECT 1 FROM subscribers s
                       WHERE s.id = d.subscriber_id AND s.status = 'active')
         RETURNING d.subscriber_id)
     SELECT subscriber_id FROM marked";

/// Whether a ledger row is free to claim, as a filter the planner cannot
/// estimate from the statistics (it takes half the rows): no index names the
/// state (migration 7), so a claim walks the primary key from its cursor and
/// stops at its limit. Written `state = 'pending' AND holder IS NULL`, it was
/// estimated from statistics that may describe past issues, all sent (a few
/// rows, it said): the plan then read every row above the cursor, then sorted
/// them, at each claim.
const FREE_TO_CLAIM: &str = "CASE WHEN state = 'pending' AND holder IS NULL THEN true END";

/// Claims for holder `$2` at most `$3` free pending rows of issue `$1` above
/// subscriber `$4`, in subscriber order, skipping rows another process has
/// locked; the rows with their subscribers. The picked rows are updated by key
/// (`= ANY` of their ids): a join with them was planned, once the ledger had
/// statistics, as a hash join over every row of the issue for each claim.
fn claim_sql() -> String {
    format!(
        "WITH picked AS (
             SELECT subscriber_id FROM deliveries
             WHERE issue_date = $1 AND subscriber_id > $4 AND {FREE_TO_CLAIM}
             ORDER BY subscriber_id LIMIT $3
             FOR UPDATE SKIP LOCKED),
         claimed AS (
             UPDATE deliveries d SET holder = $2
             WHERE d.issue_date = $1
               AND d.subscriber_id = ANY(ARRAY(SELECT subscriber_id FROM picked))
             RETURNING d.subscriber_id, d.attempts)
         SELECT c.attempts, {SUB_COLS}
         FROM claimed c JOIN subscribers s ON s.id = c.subscriber_id
         ORDER BY s.id"
    )
}

/// An enqueue over at least this many subscriber ids runs as two statements at
/// once, each on its own connection over half the ids. The server runs a
/// statement in one process: the enqueue of a million rows took 16.7 s on one
/// core while the other waited, before the send's first message (two halves at
/// once: 12.5 s against 21.2 s for one statement, in `psql` on 2 cores). Each
/// half commits on its own; enqueueing is idempotent, so a half that failed is
/// done by the next send.
const ENQUEUE_SPLIT_AT: i64 = 100_000;

/// The id ranges (inclusive) an enqueue of ids `lo..=hi` runs over: the whole,
/// or two halves.
fn enqueue_ranges(lo: i64, hi: i64) -> Vec<(i64, i64)> {
    if hi - lo + 1 < ENQUEUE_SPLIT_AT {
        return vec![(lo, hi)];
    }
    let mid = lo + (hi - lo) / 2;
    vec![(lo, mid), (mid + 1, hi)]
}

/// Any number: the advisory lock under which one process at a time migrates.
const MIGRATION_LOCK: i64 = 0x6469_6765_7374;

/// Idle connections kept for reuse; more are opened while calls run in parallel.
const POOL_IDLE: usize = 8;

/// The columns [`subscriber_from_row`] reads, in its order.
const SUB_COLS: &str =
    "s.id, s.email, s.name, s.locale, s.categories, s.timezone, s.status, s.link_key";

/// A store in a PostgreSQL database.
pub struct PgStore {
    config: postgres::Config,
    /// Where it is, without the password (for messages).
    place: String,
    idle: Mutex<Vec<Conn>>,
    /// TLS to the server, when the URL asks for it (see `tls.rs`).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Keys the hashes of suppressed addresses (`settings.suppression_key`).
    suppression_key: Vec<u8>,
    /// Per issue and holder, the highest subscriber id claimed so far: the
    /// next claim starts its index scan there instead of walking again over
    /// the entries of every row already sent (dead until vacuumed), which
    /// made each claim slower as the send went on.
    claim_cursor: Mutex<HashMap<(NaiveDate, String), i64>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.place)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Closing a connection blocks on its goodbye: not inside an async task.
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            off_runtime(move || drop(idle));
        }
    }
}

/// One connection with the statements it has prepared.
struct Conn {
    client: Client,
    prepared: HashMap<String, Statement>,
}

impl Conn {
    /// `sql` prepared once per connection.
    fn st(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.prepared.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A connection taken from the pool, given back when dropped (unless broken).
struct Pooled<'a> {
    store: &'a PgStore,
    conn: Option<Conn>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.client.is_closed() {
                return;
            }
            let mut idle = self.store.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < POOL_IDLE {
                idle.push(conn);
            }
        }
    }
}

thread_local! {
    /// This thread runs store calls for a runtime without being one of its
    /// workers (see [`may_block_here`]).
    static STORE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a store call, on this thread, known to be a thread of a runtime's
/// blocking pool (`spawn_blocking`), not one that drives its tasks: the
/// PostgreSQL calls `f` makes block here, in place, instead of each starting a
/// thread of its own (see [`off_runtime`]).
pub fn may_block_here<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            STORE_THREAD.with(|t| t.set(self.0));
        }
    }
    let _reset = Reset(STORE_THREAD.with(|t| t.replace(true)));
    f()
}

/// Runs `f`, which blocks on the database, where it may block: in place
/// outside an async runtime or on a store thread ([`may_block_here`]); in
/// `block_in_place` on a multi-threaded one; on a thread of its own on a
/// single-threaded one (the client runs a runtime of its own, which cannot
/// start inside another).
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if STORE_THREAD.with(|t| t.get()) {
        return f();
    }
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
    }
}

/// What PostgreSQL answers when it is busy rather than broken: a lock not had
/// within `lock_timeout`, a serialization failure or deadlock (the transaction
/// was rolled back), a statement cancelled by `statement_timeout`, no
/// connection slot left. Nothing was written; trying again shortly will do.
const BUSY: &[SqlState] = &[
    SqlState::LOCK_NOT_AVAILABLE,
    SqlState::T_R_SERIALIZATION_FAILURE,
    SqlState::T_R_DEADLOCK_DETECTED,
    SqlState::QUERY_CANCELED,
    SqlState::TOO_MANY_CONNECTIONS,
    SqlState::CANNOT_CONNECT_NOW,
];

pub(super) fn db(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(d) if BUSY.contains(d.code()) => StoreError::Busy(format!(
            "{}: {} ({})",
            d.severity(),
            d.message(),
            d.code().code()
        )),
        Some(d) => StoreError::Db(format!(
            "{}: {}{}",
            d.severity(),
            d.message(),
            d.detail().map(|x| format!(" ({x})")).unwrap_or_default()
        )),
        None => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            StoreError::Db(msg)
        }
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(format!("bad {what} in the database: {e}"))
}

/// Reads the [`SUB_COLS`] starting at column `base`.
fn subscriber_from_row(row: &Row, base: usize) -> StoreResult<Subscriber> {
    let get_s = |i: usize| row.try_get::<_, String>(base + i).map_err(db);
    let get_o = |i: usize| row.try_get::<_, Option<String>>(base + i).map_err(db);
    let email = SubscriberEmail::parse(&get_s(1)?).map_err(|e| bad("address", e))?;
    Ok(Subscriber {
        id: row.try_get(base).map_err(db)?,
        link_key: LinkKey::from_str(&get_s(7)?).map_err(|e| bad("link key", e))?,
        email,
        name: get_o(2)?,
        locale: get_o(3)?
            .map(|l| Locale::from_str(&l).map_err(|e| bad("locale", e)))
            .transpose()?,
        categories: split_categories(&get_s(4)?),
        timezone: get_o(5)?
            .map(|t| chrono_tz::Tz::from_str(&t).map_err(|e| bad("time zone", e)))
            .transpose()?,
        status: SubscriberStatus::from_str(&get_s(6)?).map_err(|e| bad("status", e))?,
    })
}

fn subscribers_of(rows: &[Row]) -> StoreResult<Vec<Subscriber>> {
    rows.iter().map(|r| subscriber_from_row(r, 0)).collect()
}

fn suppression_in(
    c: &mut impl GenericClient,
    key: &[u8],
    email: &SubscriberEmail,
) -> StoreResult<Option<Suppression>> {
    let row = c
        .query_opt(
            "SELECT reason, created_at FROM suppressions WHERE address_hash = $1",
            &[&address_hash(key, email)],
        )
        .map_err(db)?;
    row.map(|r| {
        let reason: String = r.try_get(0).map_err(db)?;
        Ok(Suppression {
            reason: SuppressionReason::from_str(&reason).map_err(|e| bad("reason", e))?,
            at: r.try_get(1).map_err(db)?,
        })
    })
    .transpose()
}

/// Rows of `(attempts, subscriber…)` as deliveries of `date`, appended to `out`
/// when the subscriber is active; the ids of the others (to drop from the issue).
fn deliveries_of(
    rows: &[Row],
    date: NaiveDate,
    in_doubt: bool,
    out: &mut Vec<Delivery>,
) -> StoreResult<Vec<i64>> {
    let mut gone = Vec::new();
    for r in rows {
        let attempts: i32 = r.try_get(0).map_err(db)?;
        let subscriber = subscriber_from_row(r, 1)?;
        if subscriber.status == SubscriberStatus::Active {
            out.push(Delivery {
                date,
                subscriber,
                attempts: attempts as u32,
                in_doubt,
            });
        } else {
            gone.push(subscriber.id);
        }
    }
    Ok(gone)
}

/// Applies the migrations this database lacks; refuses one newer than this binary.
fn migrate(client: &mut Client) -> StoreResult<()> {
    migrate_with(client, MIGRATIONS)
}

/// Applies every migration of `migrations` the database has not applied yet,
/// in order: also one numbered below the highest applied (two branches each
/// adding one, merged in either order).
fn migrate_with(client: &mut Client, migrations: &[(i32, &str, &str)]) -> StoreResult<()> {
    let mut tx = client.transaction().map_err(db)?;
    // Two processes starting on a new database at once apply each migration once.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL
         )",
    )
    .map_err(db)?;
    let applied: std::collections::HashSet<i32> = tx
        .query("SELECT version FROM schema_migrations", &[])
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let current = applied.iter().copied().max().unwrap_or(0);
    let latest = migrations.last().map(|m| m.0).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {current}, newer than this digestif knows \
             ({latest}): upgrade digestif"
        )));
    }
    let now = crate::clock::now();
    for (version, name, sql) in migrations.iter().filter(|m| !applied.contains(&m.0)) {
        tx.batch_execute(sql).map_err(|e| {
            StoreError::Db(format!(
                "schema migration {version:04}_{name} failed: {}",
                db(e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[version, name, &now],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// The schema as recorded, nothing created: no `schema_migrations` table is
/// [`Schema::Empty`].
fn schema(client: &mut Client) -> StoreResult<Schema> {
    let table: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .map_err(db)?
        .get(0);
    let applied: Option<Vec<i64>> = match table {
        false => None,
        true => Some(
            client
                .query("SELECT version FROM schema_migrations", &[])
                .map_err(db)?
                .iter()
                .map(|r| i64::from(r.get::<_, i32>(0)))
                .collect(),
        ),
    };
    Ok(Schema::of(
        applied.as_deref(),
        MIGRATIONS.iter().map(|m| (i64::from(m.0), m.1)),
    ))
}

/// A batch of outcomes as the parallel arrays [`RECORD`] takes.
struct OutcomeArrays<'a> {
    ids: Vec<i64>,
    states: Vec<&'static str>,
    errors: Vec<Option<&'a str>>,
    message_ids: Vec<Option<&'a str>>,
}

impl<'a> OutcomeArrays<'a> {
    fn of(outcomes: &[&'a (i64, DeliveryOutcome)]) -> OutcomeArrays<'a> {
        let mut a = OutcomeArrays {
            ids: Vec::with_capacity(outcomes.len()),
            states: Vec::with_capacity(outcomes.len()),
            errors: Vec::with_capacity(outcomes.len()),
            message_ids: Vec::with_capacity(outcomes.len()),
        };
        for (id, outcome) in outcomes {
            let (state, error, message_id) = match outcome {
                DeliveryOutcome::Sent { message_id } => ("sent", None, Some(message_id.as_str())),
                DeliveryOutcome::Retry { error } => ("pending", Some(error.as_str()), None),
                DeliveryOutcome::Failed { error, .. } => ("failed", Some(error.as_str()), None),
            };
            a.ids.push(*id);
            a.states.push(state);
            a.errors.push(error);
            a.message_ids.push(message_id);
        }
        a
    }
}

/// `outcomes` in rounds of distinct rows, to record one round after the other:
/// the n-th outcome of each row in the n-th round, so that each row's outcomes
/// apply in their order (one statement updates a row once). Usually one round.
fn rounds_of(outcomes: &[(i64, DeliveryOutcome)]) -> Vec<Vec<&(i64, DeliveryOutcome)>> {
    let mut rounds: Vec<Vec<&(i64, DeliveryOutcome)>> = Vec::new();
    let mut seen: HashMap<i64, usize> = HashMap::with_capacity(outcomes.len());
    for o in outcomes {
        let n = seen.entry(o.0).or_insert(0);
        if rounds.len() <= *n {
            rounds.push(Vec::new());
        }
        rounds[*n].push(o);
        *n += 1;
    }
    rounds
}

/// `url` without its password, to name the database in messages.
pub(super) fn place_of(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "the PostgreSQL database".into(),
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`)
    /// and brings its schema up to date.
    pub fn open(url: &str) -> StoreResult<PgStore> {
        off_runtime(|| Self::open_here(url, None, Opening::Migrate))
    }

    /// Connects as it is, never migrating: refused unless the schema is
    /// current. `Access::ReadOnly`: a read-only session.
    pub fn open_current(url: &str, access: Access) -> StoreResult<PgStore> {
        off_runtime(|| Self::open_here(url, None, Opening::AsItIs(access)))
    }

    /// The schema of the database at `url`, read in a read-only session.
    pub fn schema_of(url: &str) -> StoreResult<Schema> {
        off_runtime(|| {
            let store = Self::unconnected(url, None)?.read_only();
            schema(&mut store.connect()?.client)
                .map_err(|e| StoreError::Db(format!("database {}: {e}", store.place)))
        })
    }

    /// Like [`PgStore::open`], with statements that wait at most `lock_wait`
    /// for a row or table another connection holds (PostgreSQL's
    /// `lock_timeout`), then fail with [`StoreError::Busy`]. The service's
    /// HTTP side uses it, so that a visitor gets "try again" rather than a hang.
    pub fn open_with_lock_wait(url: &str, lock_wait: std::time::Duration) -> StoreResult<PgStore> {
        off_runtime(|| Self::open_here(url, Some(lock_wait), Opening::Migrate))
    }

    fn open_here(
        url: &str,
        lock_wait: Option<std::time::Duration>,
        opening: Opening,
    ) -> StoreResult<PgStore> {
        let mut store = Self::unconnected(url, lock_wait)?;
        if opening == Opening::AsItIs(Access::ReadOnly) {
            store = store.read_only();
        }
        let mut conn = store.connect()?;
        match opening {
            Opening::Migrate => migrate(&mut conn.client),
            Opening::AsItIs(_) => schema(&mut conn.client).and_then(|s| s.require_current()),
        }
        .map_err(|e| StoreError::Db(format!("database {}: {e}", store.place)))?;
        let key: String = conn
            .client
            .query_one(
                "SELECT value FROM settings WHERE name = 'suppression_key'",
                &[],
            )
            .map_err(db)?
            .get(0);
        store.suppression_key = key.into_bytes();
        store
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        Ok(store)
    }

    /// Its sessions read only: every write fails.
    fn read_only(mut self) -> PgStore {
        let options = format!(
            "{} -c default_transaction_read_only=on",
            self.config.get_options().unwrap_or_default()
        );
        self.config.options(options.trim_start());
        self
    }

    /// The store for `url`, not connected yet.
    fn unconnected(url: &str, lock_wait: Option<std::time::Duration>) -> StoreResult<PgStore> {
        let split = tls::split(url, &place_of(url))?;
        let mut config = postgres::Config::from_str(&split.url).map_err(|e| {
            StoreError::Invalid(format!(
                "storage.database {:?} is not a PostgreSQL URL such as \
                 postgres://digestif@localhost:5432/digestif: {e}",
                place_of(url)
            ))
        })?;
        // Every statement is prepared once per connection and kept: its generic
        // plan is made once. Left to choose, PostgreSQL plans the ledger's
        // statements anew at each call (their generic plan, not knowing the
        // arrays' sizes, is costed above the custom ones), which was half the
        // server's time of each store call of the send.
        let mut options = format!(
            "{} -c plan_cache_mode=force_generic_plan",
            config.get_options().unwrap_or_default()
        );
        if let Some(wait) = lock_wait {
            options.push_str(&format!(" -c lock_timeout={}", wait.as_millis().max(1)));
        }
        config.options(options.trim_start());
        Ok(PgStore {
            config,
            place: place_of(url),
            idle: Mutex::new(Vec::new()),
            tls: split.tls,
            suppression_key: Vec::new(),
            claim_cursor: Mutex::new(HashMap::new()),
        })
    }

    fn connect(&self) -> StoreResult<Conn> {
        let client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        };
        let client = client.map_err(|e| {
            // A certificate refused either way: the server's words, then what to do.
            let user = self.config.get_user().unwrap_or_default();
            let hint = tls::refusal_hint(&e, &self.place, user)
                .map(|h| format!(": {h}"))
                .unwrap_or_default();
            match db(e) {
                // No connection slot left on the server: busy, not broken.
                StoreError::Busy(m) => {
                    StoreError::Busy(format!("cannot connect to {}: {m}", self.place))
                }
                StoreError::Db(m) | StoreError::Invalid(m) => {
                    StoreError::Db(format!("cannot connect to {}: {m}{hint}", self.place))
                }
                other => other,
            }
        })?;
        Ok(Conn {
            client,
            prepared: HashMap::new(),
        })
    }

    /// A connection from the pool, or a new one.
    fn conn(&self) -> StoreResult<Pooled<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        Ok(Pooled {
            store: self,
            conn: Some(conn),
        })
    }

    /// Where the last claim of `key` (issue, holder) ended.
    fn claimed_up_to(&self, key: &(NaiveDate, String)) -> i64 {
        let cursors = self.claim_cursor.lock().unwrap_or_else(|p| p.into_inner());
        cursors.get(key).copied().unwrap_or(i64::MIN)
    }

    /// The schema version applied to this database.
    pub fn schema_version(&self) -> StoreResult<i64> {
        off_runtime(|| self.read_schema_version())
    }

    fn read_schema_version(&self) -> StoreResult<i64> {
        let v: i32 = self
            .conn()?
            .client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(db)?
            .get(0);
        Ok(i64::from(v))
    }

    /// Rows of one query with a statement prepared once per connection.
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let mut c = self.conn()?;
        let st = c.st(sql).map_err(db)?;
        c.client.query(&st, params).map_err(db)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let mut c = self.conn()?;
        let st = c.st(sql).map_err(db)?;
        c.client.execute(&st, params).map_err(db)
    }

    /// See [`super::SqliteStore`]'s `erase`: deletes the subscriber (ledger rows
    /// cascade) and sign-up of `email`, keeping a suppression record.
    fn erase(
        &self,
        email: &SubscriberEmail,
        reason: Option<SuppressionReason>,
    ) -> StoreResult<bool> {
        let mut c = self.conn()?;
        let mut tx = c.client.transaction().map_err(db)?;
        let key = email.key();
        let status: Option<String> = tx
            .query_opt(
                "DELETE FROM subscribers WHERE email_key = $1 RETURNING status",
                &[&key],
            )
            .map_err(db)?
            .map(|r| r.get(0));
        let signups = tx
            .execute("DELETE FROM signups WHERE email_key = $1", &[&key])
            .map_err(db)?;
        let reason = reason.or(match status.as_deref() {
            Some("unsubscribed") => Some(SuppressionReason::Unsubscribed),
            Some("bounced") => Some(SuppressionReason::Bounced),
            Some(_) => Some(SuppressionReason::Removed),
            None => None,
        });
        if let Some(reason) = reason {
            // A later reason replaces an earlier one, except that "forgotten" stays.
            tx.execute(
                "INSERT INTO suppressions (address_hash, reason, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (address_hash) DO UPDATE SET reason = excluded.reason,
                   created_at = excluded.created_at
                 WHERE suppressions.reason <> 'forgotten'",
                &[
                    &address_hash(&self.suppression_key, email),
                    &reason.as_str(),
                    &crate::clock::now(),
                ],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(status.is_some() || signups > 0)
    }

    /// Records `outcomes` inside the transaction `tx`, in their order (a row
    /// already sent or failed is never moved back). `set` is [`RECORD`]
    /// prepared on the transaction's connection: one statement for the batch,
    /// or one per outcome of the same row when a row has several.
    fn record_in(
        tx: &mut postgres::Transaction<'_>,
        set: &Statement,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        for round in rounds_of(outcomes) {
            let a = OutcomeArrays::of(&round);
            tx.execute(
                set,
                &[&date, &a.ids, &a.states, &a.errors, &a.message_ids, &at],
            )
            .map_err(db)?;
        }
        for (id, outcome) in outcomes {
            if let DeliveryOutcome::Failed {
                error,
                hard_bounce: true,
            } = outcome
            {
                tx.execute(
                    "UPDATE subscribers SET status = 'bounced', status_reason = $2, updated_at = $3
                     WHERE id = $1 AND status <> 'unsubscribed'",
                    &[id, &error.as_str(), &at],
                )
                .map_err(db)?;
            }
        }
        Ok(())
    }

    /// Claims rows of `date` in `state`, at most `limit`, in subscriber order,
    /// skipping rows another process holds. Rows whose subscriber is no longer
    /// active are deleted from the ledger.
    fn claim_state(
        tx: &mut postgres::Transaction<'_>,
        date: NaiveDate,
        state: DeliveryState,
        limit: usize,
        now: DateTime<Utc>,
        out: &mut Vec<Delivery>,
    ) -> StoreResult<()> {
        let in_doubt = state == DeliveryState::Sending;
        let pick = tx
            .prepare(&format!(
                "SELECT d.attempts, {SUB_COLS}
                 FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.issue_date = $1 AND d.subscriber_id > $3
                   AND CASE WHEN d.state = $2 THEN true END
                 ORDER BY d.subscriber_id LIMIT $4
                 FOR UPDATE OF d SKIP LOCKED"
            ))
            .map_err(db)?;
        // A cursor, not a re-query from the start: claimed in-doubt rows stay in `sending`.
        let mut after = i64::MIN;
        while out.len() < limit {
            let want = (limit - out.len()) as i64;
            let rows = tx
                .query(&pick, &[&date, &state.as_str(), &after, &want])
                .map_err(db)?;
            if rows.is_empty() {
                break;
            }
            let (mut take, mut drop) = (Vec::new(), Vec::new());
            for r in &rows {
                let attempts: i32 = r.try_get(0).map_err(db)?;
                let subscriber = subscriber_from_row(r, 1)?;
                after = subscriber.id;
                if subscriber.status == SubscriberStatus::Active {
                    take.push(subscriber.id);
                    out.push(Delivery {
                        date,
                        subscriber,
                        attempts: attempts as u32,
                        in_doubt,
                    });
                } else {
                    drop.push(subscriber.id);
                }
            }
            if !take.is_empty() {
                tx.execute(
                    "UPDATE deliveries SET state = 'sending', updated_at = $3
                     WHERE issue_date = $1 AND subscriber_id = ANY($2)",
                    &[&date, &take, &now],
                )
                .map_err(db)?;
            }
            if !drop.is_empty() {
                tx.execute(
                    "DELETE FROM deliveries WHERE issue_date = $1 AND subscriber_id = ANY($2)",
                    &[&date, &drop],
                )
                .map_err(db)?;
            }
        }
        Ok(())
    }
}

impl Subscribers for PgStore {
    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted> {
        off_runtime(|| {
            let mut outs = self.upsert_many(std::slice::from_ref(new))?;
            Ok(outs.pop().unwrap_or(Upserted::Unchanged))
        })
    }

    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let st = upsert::Statements::prepare(&mut c).map_err(db)?;
            let mut tx = c.client.transaction().map_err(db)?;
            tx.batch_execute(upsert::PLANS).map_err(db)?;
            let now = crate::clock::now();
            let mut out = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(upsert::CHUNK) {
                let outs = upsert::upsert_chunk(&mut tx, &st, chunk, now, &self.suppression_key)
                    .map_err(|e| match e {
                        StoreError::Db(m) => StoreError::Db(format!(
                            "upserting {} subscribers from {}: {m}",
                            chunk.len(),
                            chunk[0].email
                        )),
                        other => other,
                    })?;
                out.extend(outs);
            }
            tx.commit().map_err(db)?;
            Ok(out)
        })
    }

    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>> {
        off_runtime(|| {
            let rows = self.query(
                &format!("SELECT {SUB_COLS} FROM subscribers s WHERE s.email_key = $1"),
                &[&email.key()],
            )?;
            Ok(subscribers_of(&rows)?.pop())
        })
    }

    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        off_runtime(|| {
            let rows = self.query(
                &format!("SELECT {SUB_COLS} FROM subscribers s WHERE s.id = $1"),
                &[&id],
            )?;
            Ok(subscribers_of(&rows)?.pop())
        })
    }

    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        off_runtime(|| self.erase(email, None))
    }

    fn forget_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        off_runtime(|| self.erase(email, Some(SuppressionReason::Forgotten)))
    }

    fn suppression(&self, email: &SubscriberEmail) -> StoreResult<Option<Suppression>> {
        off_runtime(|| suppression_in(&mut self.conn()?.client, &self.suppression_key, email))
    }

    fn lift_suppression(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        off_runtime(|| {
            let n = self.execute(
                "DELETE FROM suppressions WHERE address_hash = $1",
                &[&address_hash(&self.suppression_key, email)],
            )?;
            Ok(n > 0)
        })
    }

    fn subscriber_by_link_key(&self, key: &LinkKey) -> StoreResult<Option<Subscriber>> {
        off_runtime(|| {
            let rows = self.query(
                &format!("SELECT {SUB_COLS} FROM subscribers s WHERE s.link_key = $1"),
                &[&key.to_string()],
            )?;
            Ok(subscribers_of(&rows)?.pop())
        })
    }

    fn subscriber_by_legacy_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        off_runtime(|| {
            let rows = self.query(
                &format!("SELECT {SUB_COLS} FROM subscribers s WHERE s.id = $1 AND s.legacy_links"),
                &[&id],
            )?;
            Ok(subscribers_of(&rows)?.pop())
        })
    }

    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        off_runtime(|| {
            let n = self.execute(
                "UPDATE subscribers SET status = $2, status_reason = $3, updated_at = $4,
                   unsubscribed_at = CASE
                     WHEN $2 = 'unsubscribed' AND status = 'unsubscribed' THEN unsubscribed_at
                     WHEN $2 = 'unsubscribed' THEN $4
                     ELSE unsubscribed_at END
                 WHERE id = $1",
                &[&id, &status.as_str(), &reason, &at],
            )?;
            Ok(n > 0)
        })
    }

    fn set_preferences(
        &self,
        id: i64,
        locale: Option<Locale>,
        categories: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        off_runtime(|| {
            let n = self.execute(
                "UPDATE subscribers SET locale = $2, categories = $3, updated_at = $4 WHERE id = $1",
                &[
                    &id,
                    &locale.map(|l| l.code()),
                    &join_categories(categories),
                    &at,
                ],
            )?;
            Ok(n > 0)
        })
    }

    fn subscribers_page(
        &self,
        status: Option<SubscriberStatus>,
        after_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<Subscriber>> {
        off_runtime(|| {
            let rows = self.query(
                &format!(
                    "SELECT {SUB_COLS} FROM subscribers s
                     WHERE ($1::text IS NULL OR s.status = $1) AND s.id > $2
                     ORDER BY s.id LIMIT $3"
                ),
                &[&status.map(|s| s.as_str()), &after_id, &(limit as i64)],
            )?;
            subscribers_of(&rows)
        })
    }

    fn count_by_status(&self) -> StoreResult<Vec<(SubscriberStatus, u64)>> {
        off_runtime(|| {
            self.query(
                "SELECT status, COUNT(*) FROM subscribers GROUP BY status ORDER BY status",
                &[],
            )?
            .iter()
            .map(|r| {
                let s: String = r.get(0);
                let n: i64 = r.get(1);
                Ok((
                    SubscriberStatus::from_str(&s).map_err(|e| bad("status", e))?,
                    n as u64,
                ))
            })
            .collect()
        })
    }
}

impl Signups for PgStore {
    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()> {
        off_runtime(|| {
            let s = &signup.subscriber;
            self.execute(
                "INSERT INTO signups
                   (email_key, email, name, locale, categories, timezone, status, requested_at)
                 VALUES ($1, $8, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (email_key) DO UPDATE SET
                   name = excluded.name, locale = excluded.locale,
                   categories = excluded.categories, timezone = excluded.timezone,
                   status = excluded.status, requested_at = excluded.requested_at",
                &[
                    &s.email.key(),
                    &s.name,
                    &s.locale.map(|l| l.code()),
                    &join_categories(&s.categories),
                    &s.timezone.map(|t| t.name()),
                    &s.status.as_str(),
                    &signup.requested_at,
                    &s.email.as_str(),
                ],
            )?;
            Ok(())
        })
    }

    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>> {
        off_runtime(|| {
            let rows = self.query(
                "DELETE FROM signups WHERE email_key = $1
                 RETURNING email, name, locale, categories, timezone, status, requested_at",
                &[&email.key()],
            )?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let email: String = r.get(0);
            let locale: Option<String> = r.get(2);
            let categories: String = r.get(3);
            let timezone: Option<String> = r.get(4);
            let status: String = r.get(5);
            Ok(Some(PendingSignup {
                subscriber: NewSubscriber {
                    email: SubscriberEmail::parse(&email).map_err(|e| bad("address", e))?,
                    name: r.get(1),
                    locale: locale
                        .map(|l| Locale::from_str(&l).map_err(|e| bad("locale", e)))
                        .transpose()?,
                    categories: split_categories(&categories),
                    timezone: timezone
                        .map(|t| chrono_tz::Tz::from_str(&t).map_err(|e| bad("time zone", e)))
                        .transpose()?,
                    status: SubscriberStatus::from_str(&status).map_err(|e| bad("status", e))?,
                },
                requested_at: r.get(6),
            }))
        })
    }

    fn claim_confirmation_mail(
        &self,
        email: &SubscriberEmail,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> StoreResult<bool> {
        off_runtime(|| {
            let n = self.execute(
                "UPDATE signups SET mailed_at = $2
                 WHERE email_key = $1 AND (mailed_at IS NULL OR mailed_at <= $3)",
                &[&email.key(), &now, &(now - cooldown)],
            )?;
            Ok(n > 0)
        })
    }

    fn purge_signups(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        off_runtime(|| self.execute("DELETE FROM signups WHERE requested_at < $1", &[&before]))
    }
}

impl Ledger for PgStore {
    fn across_a_connection(&self) -> bool {
        true
    }

    fn ledger_enqueue(&self, date: NaiveDate, max_id: Option<i64>) -> StoreResult<u64> {
        off_runtime(|| {
            let now = crate::clock::now();
            let row = self.query(
                "SELECT min(id), max(id) FROM subscribers WHERE status = 'active'",
                &[],
            )?;
            let ids: (Option<i64>, Option<i64>) = (row[0].get(0), row[0].get(1));
            let (Some(lo), Some(hi)) = ids else {
                return Ok(0);
            };
            let hi = max_id.map_or(hi, |m| hi.min(m));
            if hi < lo {
                return Ok(0);
            }
            let insert = |(from, to): (i64, i64)| {
                self.execute(
                    "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, updated_at)
                     SELECT $1, id, 'pending', 0, $4 FROM subscribers
                     WHERE status = 'active' AND id BETWEEN $2 AND $3
                     ON CONFLICT (issue_date, subscriber_id) DO NOTHING",
                    &[&date, &from, &to, &now],
                )
            };
            let insert = &insert;
            let ranges = enqueue_ranges(lo, hi);
            std::thread::scope(|s| {
                let others: Vec<_> = ranges[1..]
                    .iter()
                    .map(|&r| s.spawn(move || insert(r)))
                    .collect();
                let mut n = insert(ranges[0])?;
                for other in others {
                    n += other.join().expect("an enqueue thread panicked")?;
                }
                Ok(n)
            })
        })
    }

    fn ledger_enqueue_in_zones(
        &self,
        date: NaiveDate,
        zones: &[String],
        with_unzoned: bool,
    ) -> StoreResult<u64> {
        off_runtime(|| {
            self.execute(
                "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, updated_at)
                 SELECT $1, id, 'pending', 0, $2 FROM subscribers
                 WHERE status = 'active'
                   AND ((timezone IS NULL AND $3) OR timezone = ANY($4))
                 ON CONFLICT (issue_date, subscriber_id) DO NOTHING",
                &[&date, &crate::clock::now(), &with_unzoned, &zones],
            )
        })
    }

    fn ledger_claim(
        &self,
        date: NaiveDate,
        limit: usize,
        include_in_doubt: bool,
    ) -> StoreResult<Vec<Delivery>> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            let now = crate::clock::now();
            let mut out = Vec::with_capacity(limit.min(10_000));
            if include_in_doubt {
                Self::claim_state(&mut tx, date, DeliveryState::Sending, limit, now, &mut out)?;
            }
            Self::claim_state(&mut tx, date, DeliveryState::Pending, limit, now, &mut out)?;
            tx.commit().map_err(db)?;
            Ok(out)
        })
    }

    fn ledger_record(
        &self,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let set = c.st(RECORD).map_err(db)?;
            let mut tx = c.client.transaction().map_err(db)?;
            Self::record_in(&mut tx, &set, date, outcomes, at)?;
            tx.commit().map_err(db)
        })
    }

    fn ledger_next(&self, date: NaiveDate, after: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let read = c
                .st(&format!(
                    "SELECT d.attempts, {SUB_COLS}
                     FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                     WHERE d.issue_date = $1 AND d.subscriber_id > $2
                       AND CASE WHEN d.state = 'pending' THEN true END
                     ORDER BY d.subscriber_id LIMIT $3"
                ))
                .map_err(db)?;
            let mut out = Vec::with_capacity(limit.min(10_000));
            let mut after = after;
            while out.len() < limit {
                let want = (limit - out.len()) as i64;
                let rows = c.client.query(&read, &[&date, &after, &want]).map_err(db)?;
                if rows.is_empty() {
                    break;
                }
                let mut gone = Vec::new();
                for r in &rows {
                    let attempts: i32 = r.try_get(0).map_err(db)?;
                    let subscriber = subscriber_from_row(r, 1)?;
                    after = subscriber.id;
                    if subscriber.status == SubscriberStatus::Active {
                        out.push(Delivery {
                            date,
                            subscriber,
                            attempts: attempts as u32,
                            in_doubt: false,
                        });
                    } else {
                        gone.push(subscriber.id);
                    }
                }
                if !gone.is_empty() {
                    c.client
                        .execute(
                            "DELETE FROM deliveries
                             WHERE issue_date = $1 AND subscriber_id = ANY($2) AND state = 'pending'",
                            &[&date, &gone],
                        )
                        .map_err(db)?;
                }
            }
            Ok(out)
        })
    }

    fn ledger_record_and_mark(
        &self,
        date: NaiveDate,
        holder: &Holder,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let rounds = rounds_of(outcomes);
            let bounce = outcomes.iter().any(|(_, o)| {
                matches!(
                    o,
                    DeliveryOutcome::Failed {
                        hard_bounce: true,
                        ..
                    }
                )
            });
            let recorded: std::collections::HashSet<i64> =
                outcomes.iter().map(|(id, _)| *id).collect();
            let mut moved: std::collections::HashSet<i64> =
                if rounds.len() <= 1 && !bounce && !marks.iter().any(|id| recorded.contains(id)) {
                    // The usual call: distinct rows, one statement.
                    let both = c.st(RECORD_AND_MARK).map_err(db)?;
                    let a = OutcomeArrays::of(rounds.first().map(Vec::as_slice).unwrap_or(&[]));
                    let moved: std::collections::HashSet<i64> = c
                        .client
                        .query(
                            &both,
                            &[
                                &date,
                                &a.ids,
                                &a.states,
                                &a.errors,
                                &a.message_ids,
                                &at,
                                &marks,
                                &holder.as_str(),
                            ],
                        )
                        .map_err(db)?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    if marks.iter().any(|id| !moved.contains(id)) {
                        // Unsubscribed (or bounced) since it was read: out of this issue.
                        let drop = c.st(DROP_GONE).map_err(db)?;
                        c.client.execute(&drop, &[&date, &marks]).map_err(db)?;
                    }
                    moved
                } else {
                    // A row with several outcomes, one also marked again (a retry),
                    // or a hard bounce: statement after statement, in order.
                    let set = c.st(RECORD).map_err(db)?;
                    let mark = c.st(MARK).map_err(db)?;
                    let drop = c.st(DROP_GONE).map_err(db)?;
                    let mut tx = c.client.transaction().map_err(db)?;
                    Self::record_in(&mut tx, &set, date, outcomes, at)?;
                    let moved: std::collections::HashSet<i64> = if marks.is_empty() {
                        Default::default()
                    } else {
                        tx.query(&mark, &[&date, &marks, &at, &holder.as_str()])
                            .map_err(db)?
                            .iter()
                            .map(|r| r.get(0))
                            .collect()
                    };
                    if marks.iter().any(|id| !moved.contains(id)) {
                        // Unsubscribed (or bounced) since it was read: out of this issue.
                        tx.execute(&drop, &[&date, &marks]).map_err(db)?;
                    }
                    tx.commit().map_err(db)?;
                    moved
                };
            // A row marked twice in one call moved once.
            Ok(marks.iter().map(|id| moved.remove(id)).collect())
        })
    }

    fn sender_seen(&self, date: NaiveDate, holder: &Holder, now: DateTime<Utc>) -> StoreResult<()> {
        off_runtime(|| {
            self.execute(
                "INSERT INTO senders (holder, issue_date, started_at, last_seen)
                 VALUES ($1, $2, $3, $3)
                 ON CONFLICT (holder) DO UPDATE
                 SET issue_date = EXCLUDED.issue_date, last_seen = EXCLUDED.last_seen",
                &[&holder.as_str(), &date, &now],
            )
            .map(drop)
        })
    }

    fn senders(&self, date: NaiveDate) -> StoreResult<Vec<SenderSeen>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT holder, last_seen FROM senders WHERE issue_date = $1
                     ORDER BY started_at, holder",
                    &[&date],
                )?
                .iter()
                .map(|r| SenderSeen {
                    holder: Holder::new(r.get::<_, String>(0)),
                    last_seen: r.get(1),
                })
                .collect())
        })
    }

    fn ledger_claim_for(
        &self,
        date: NaiveDate,
        holder: &Holder,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let claim = c.st(&claim_sql()).map_err(db)?;
            let key = (date, holder.as_str().to_string());
            let mut after = self.claimed_up_to(&key);
            let mut from_start = after == i64::MIN;
            let mut out = Vec::with_capacity(limit.min(10_000));
            while out.len() < limit {
                let want = (limit - out.len()) as i64;
                let rows = c
                    .client
                    .query(&claim, &[&date, &holder.as_str(), &want, &after])
                    .map_err(db)?;
                if let Some(last) = rows.last() {
                    after = after.max(last.try_get(1).map_err(db)?);
                }
                let gone = deliveries_of(&rows, date, false, &mut out)?;
                if !gone.is_empty() {
                    c.client
                        .execute(
                            "DELETE FROM deliveries
                             WHERE issue_date = $1 AND subscriber_id = ANY($2) AND state = 'pending'",
                            &[&date, &gone],
                        )
                        .map_err(db)?;
                }
                if (rows.len() as i64) < want {
                    if from_start {
                        break;
                    }
                    // Rows below the cursor freed meanwhile (released by a
                    // sender, taken over): looked for once from the start.
                    after = i64::MIN;
                    from_start = true;
                }
            }
            self.claim_cursor
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, after);
            // In subscriber order also when rows below the cursor came last.
            out.sort_by_key(|d| d.subscriber.id);
            Ok(out)
        })
    }

    fn ledger_take_over(
        &self,
        date: NaiveDate,
        holder: &Holder,
        gone: &[Holder],
        now: DateTime<Utc>,
    ) -> StoreResult<TakeOver> {
        let gone: Vec<&str> = gone.iter().map(Holder::as_str).collect();
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            tx.execute("DELETE FROM senders WHERE holder = ANY($1)", &[&gone])
                .map_err(db)?;
            let rows = tx
                .query(
                    &format!(
                        "WITH taken AS (
                             UPDATE deliveries d SET holder = $2, updated_at = $3
                             WHERE d.issue_date = $1 AND d.state = 'sending'
                               AND d.holder IS DISTINCT FROM $2
                               AND (d.holder IS NULL OR NOT EXISTS (
                                    SELECT 1 FROM senders h WHERE h.holder = d.holder))
                             RETURNING d.subscriber_id, d.attempts)
                         SELECT t.attempts, {SUB_COLS}
                         FROM taken t JOIN subscribers s ON s.id = t.subscriber_id
                         ORDER BY s.id"
                    ),
                    &[&date, &holder.as_str(), &now],
                )
                .map_err(db)?;
            let mut found = TakeOver::default();
            let dropped = deliveries_of(&rows, date, true, &mut found.in_doubt)?;
            if !dropped.is_empty() {
                tx.execute(
                    "DELETE FROM deliveries WHERE issue_date = $1 AND subscriber_id = ANY($2)",
                    &[&date, &dropped],
                )
                .map_err(db)?;
            }
            found.released = tx
                .execute(
                    "UPDATE deliveries d SET holder = NULL
                     WHERE d.issue_date = $1 AND d.state = 'pending'
                       AND d.holder IS NOT NULL AND d.holder <> $2
                       AND NOT EXISTS (SELECT 1 FROM senders h WHERE h.holder = d.holder)",
                    &[&date, &holder.as_str()],
                )
                .map_err(db)?;
            let held: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM deliveries
                     WHERE issue_date = $1 AND state IN ('pending', 'sending')
                       AND holder IS NOT NULL AND holder <> $2",
                    &[&date, &holder.as_str()],
                )
                .map_err(db)?
                .get(0);
            found.held_elsewhere = held as u64;
            tx.commit().map_err(db)?;
            Ok(found)
        })
    }

    fn ledger_release(&self, date: NaiveDate, holder: &Holder) -> StoreResult<()> {
        // The released rows are claimed again from the first.
        self.claim_cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(date, holder.as_str().to_string()));
        off_runtime(|| {
            self.execute(
                "UPDATE deliveries SET holder = NULL
                 WHERE issue_date = $1 AND state = 'pending' AND holder = $2",
                &[&date, &holder.as_str()],
            )
            .map(drop)
        })
    }

    fn sender_left(&self, holder: &Holder) -> StoreResult<()> {
        off_runtime(|| {
            self.execute("DELETE FROM senders WHERE holder = $1", &[&holder.as_str()])
                .map(drop)
        })
    }

    fn ledger_counts(&self, date: NaiveDate) -> StoreResult<LedgerCounts> {
        off_runtime(|| {
            let mut c = LedgerCounts::default();
            for r in self.query(
                "SELECT state, COUNT(*) FROM deliveries WHERE issue_date = $1 GROUP BY state",
                &[&date],
            )? {
                let state: String = r.get(0);
                let n = r.get::<_, i64>(1) as u64;
                match state.as_str() {
                    "pending" => c.pending = n,
                    "sending" => c.sending = n,
                    "sent" => c.sent = n,
                    "failed" => c.failed = n,
                    other => return Err(StoreError::Db(format!("unknown ledger state {other:?}"))),
                }
            }
            Ok(c)
        })
    }
}

impl LedgerHistory for PgStore {
    fn ledger_by_sender(&self, date: NaiveDate) -> StoreResult<Vec<SenderRows>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT holder, COUNT(*) FILTER (WHERE state = 'pending'),
                            COUNT(*) FILTER (WHERE state = 'sending'),
                            COUNT(*) FILTER (WHERE state = 'sent'),
                            COUNT(*) FILTER (WHERE state = 'failed')
                     FROM deliveries WHERE issue_date = $1 AND holder IS NOT NULL
                     GROUP BY holder ORDER BY holder",
                    &[&date],
                )?
                .iter()
                .map(|r| {
                    let n = |i| r.get::<_, i64>(i) as u64;
                    SenderRows {
                        holder: Holder::new(r.get::<_, String>(0)),
                        rows: LedgerCounts {
                            pending: n(1),
                            sending: n(2),
                            sent: n(3),
                            failed: n(4),
                        },
                    }
                })
                .collect())
        })
    }

    fn ledger_failures(&self, date: NaiveDate) -> StoreResult<Vec<(String, String)>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT s.email, COALESCE(d.last_error, '')
                     FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                     WHERE d.issue_date = $1 AND d.state = 'failed' ORDER BY d.subscriber_id",
                    &[&date],
                )?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn ledger_dates(&self) -> StoreResult<Vec<NaiveDate>> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT DISTINCT issue_date FROM deliveries ORDER BY issue_date DESC",
                    &[],
                )?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }
}

impl Leases for PgStore {
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        off_runtime(|| {
            // Compare-and-set in one statement: take it if free, expired or already ours.
            let n = self.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET
                   holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= $3",
                &[&name, &holder, &now, &until],
            )?;
            Ok(n == 1)
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        off_runtime(|| {
            self.execute(
                "DELETE FROM leases WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )?;
            Ok(())
        })
    }

    fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        off_runtime(|| {
            Ok(self
                .query("SELECT holder FROM leases WHERE name = $1", &[&name])?
                .first()
                .map(|r| r.get(0)))
        })
    }
}

impl Runs for PgStore {
    fn record_run(&self, run: &RunRecord) -> StoreResult<()> {
        off_runtime(|| {
            self.execute(
                "INSERT INTO runs (issue_date, started_at, finished_at, status, sent, failed,
                                   retried, in_doubt, message)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &run.date,
                    &run.started_at,
                    &run.finished_at,
                    &run.status.as_str(),
                    &(run.sent as i64),
                    &(run.failed as i64),
                    &(run.retried as i64),
                    &(run.in_doubt as i64),
                    &run.message,
                ],
            )?;
            Ok(())
        })
    }

    fn last_run(&self) -> StoreResult<Option<RunRecord>> {
        off_runtime(|| {
            let rows = self.query(
                "SELECT issue_date, started_at, finished_at, status, sent, failed, retried,
                        in_doubt, message
                 FROM runs ORDER BY finished_at DESC, id DESC LIMIT 1",
                &[],
            )?;
            rows.first()
                .map(|r| {
                    Ok(RunRecord {
                        date: r.get(0),
                        started_at: r.get(1),
                        finished_at: r.get(2),
                        status: RunStatus::parse(r.get(3)).map_err(|e| bad("run status", e))?,
                        sent: r.get::<_, i64>(4) as u64,
                        failed: r.get::<_, i64>(5) as u64,
                        retried: r.get::<_, i64>(6) as u64,
                        in_doubt: r.get::<_, i64>(7) as u64,
                        message: r.get(8),
                    })
                })
                .transpose()
        })
    }

    fn ping(&self) -> StoreResult<()> {
        off_runtime(|| {
            self.query("SELECT 1", &[])?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "../../tests/support/pg_cluster.rs"]
pub(crate) mod test_cluster;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::suite::{active, email, Db};

    /// A database of its own in the test cluster.
    struct Database(String);

    impl Db for Database {
        fn open(&self) -> Arc<dyn crate::store::Backend> {
            Arc::new(PgStore::open(&self.0).unwrap())
        }
        fn text(&self, sql: &str) -> Option<String> {
            let mut c = Client::connect(&self.0, NoTls).unwrap();
            c.query_one(sql, &[]).unwrap().get(0)
        }
    }

    fn fresh() -> Box<dyn Db> {
        Box::new(Database(test_cluster::fresh_database()))
    }

    crate::store_suite!(fresh);

    /// On the single-threaded runtime of `send`, a call on the runtime's thread
    /// goes to a thread of its own; one already on a store thread of the
    /// blocking pool runs in place, without yet another thread per call.
    #[test]
    fn a_call_on_a_store_thread_runs_in_place_and_one_on_the_runtime_thread_does_not() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let here = std::thread::current().id();
            assert_ne!(off_runtime(|| std::thread::current().id()), here);
            let (store_thread, ran_on) = tokio::task::spawn_blocking(|| {
                let here = std::thread::current().id();
                (
                    here,
                    may_block_here(|| off_runtime(|| std::thread::current().id())),
                )
            })
            .await
            .unwrap();
            assert_eq!(ran_on, store_thread);
            assert_ne!(store_thread, here);
            // The mark does not outlive the call.
            let (store_thread, ran_on) = tokio::task::spawn_blocking(|| {
                may_block_here(|| ());
                (
                    std::thread::current().id(),
                    off_runtime(|| std::thread::current().id()),
                )
            })
            .await
            .unwrap();
            assert_ne!(ran_on, store_thread);
        });
    }

    /// The newest schema version this binary knows.
    fn latest() -> i64 {
        i64::from(MIGRATIONS.last().unwrap().0)
    }

    #[test]
    fn a_row_locked_by_another_connection_past_the_lock_wait_is_busy_and_reads_go_on() {
        let url = test_cluster::fresh_database();
        let s = PgStore::open_with_lock_wait(&url, std::time::Duration::from_millis(200)).unwrap();
        s.upsert_subscriber(&active("a@example.com")).unwrap();
        let id = s
            .subscriber_by_email(&email("a@example.com"))
            .unwrap()
            .unwrap()
            .id;
        let unsubscribe = || {
            s.set_status(
                id,
                SubscriberStatus::Unsubscribed,
                "test",
                crate::clock::now(),
            )
        };
        // Another process holds the subscriber's row.
        let mut holder = Client::connect(&url, NoTls).unwrap();
        let mut tx = holder.transaction().unwrap();
        tx.execute("SELECT 1 FROM subscribers WHERE id = $1 FOR UPDATE", &[&id])
            .unwrap();
        let err = unsubscribe().unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
        assert!(err.to_string().contains("55P03"), "{err}");
        assert_eq!(
            s.subscriber_by_id(id).unwrap().unwrap().status,
            SubscriberStatus::Active,
            "reads do not wait, and nothing was written"
        );
        tx.rollback().unwrap();
        assert!(unsubscribe().unwrap());
    }

    /// A fresh database with `n` active subscribers and the issue of
    /// 2026-03-02 enqueued for them: a connection to it, and the date.
    fn enqueued(n: i32) -> (Client, NaiveDate) {
        let url = test_cluster::fresh_database();
        let s = PgStore::open(&url).unwrap();
        let mut c = Client::connect(&url, NoTls).unwrap();
        c.execute(
            "INSERT INTO subscribers (email, email_key, link_key, status, created_at, updated_at)
             SELECT 'r' || i || '@example.com', 'r' || i || '@example.com', 'k' || i, 'active',
                    now(), now()
             FROM generate_series(1, $1) AS i",
            &[&n],
        )
        .unwrap();
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(s.ledger_enqueue(date, None).unwrap(), n as u64);
        (c, date)
    }

    /// The generic plan of each ledger statement of the send (what a prepared
    /// statement of the store runs), on a ledger just enqueued, with or without
    /// statistics on it.
    fn generic_plans(statements: &[(&str, &str)], analyzed: bool) -> Vec<(String, String)> {
        // A list of a real size: on a few pages any plan is cheap.
        let (mut c, _) = enqueued(20_000);
        if analyzed {
            // A past issue, all sent, beside the one being sent: the
            // statistics say few rows are pending.
            c.batch_execute(
                "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, updated_at)
                 SELECT '2026-02-23', subscriber_id, 'sent', 1, now() FROM deliveries;
                 ANALYZE deliveries",
            )
            .unwrap();
        }
        c.batch_execute("SET plan_cache_mode = force_generic_plan")
            .unwrap();
        statements
            .iter()
            .map(|(sql, args)| {
                c.batch_execute(&format!("PREPARE p AS {sql}")).unwrap();
                let plan = c
                    .query(&format!("EXPLAIN EXECUTE p({args})"), &[])
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n");
                c.batch_execute("DEALLOCATE p").unwrap();
                (sql.lines().next().unwrap_or_default().to_string(), plan)
            })
            .collect()
    }

    #[test]
    fn the_ledger_statements_find_their_rows_by_key_whatever_the_statistics_say() {
        let (date, ids, at) = ("'2026-03-02'", "'{1,2,3}'", "now()");
        let record_args = format!(
            "{date}, {ids}, '{{sent,sent,failed}}', '{{NULL,NULL,550}}', '{{a,b,NULL}}', {at}"
        );
        for analyzed in [false, true] {
            let plans = generic_plans(
                &[
                    (RECORD, &record_args),
                    (MARK, &format!("{date}, {ids}, {at}, 'h'")),
                    (DROP_GONE, &format!("{date}, {ids}")),
                    (RECORD_AND_MARK, &format!("{record_args}, '{{4,5}}', 'h'")),
                ],
                analyzed,
            );
            for (statement, plan) in plans {
                // Through deliveries_by_state, a statement walks every pending row
                // of the issue for each batch.
                assert!(!plan.contains("deliveries_by_state"), "{statement}\n{plan}");
                assert!(!plan.contains("Seq Scan"), "{statement}\n{plan}");
            }
        }
    }

    /// Every statement of the store, prepared once per connection, runs its
    /// generic plan from the first call: left to choose, PostgreSQL planned
    /// the send's ledger statement anew at every call.
    #[test]
    fn the_send_statements_are_planned_once_per_connection_not_at_each_call() {
        let url = test_cluster::fresh_database();
        let s = PgStore::open(&url).unwrap();
        for i in 0..24 {
            s.upsert_subscriber(&active(&format!("r{i}@example.com")))
                .unwrap();
        }
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        s.ledger_enqueue(date, None).unwrap();
        let holder = Holder::new("h");
        let now = crate::clock::now();
        let ids: Vec<i64> = s
            .ledger_claim_for(date, &holder, 24)
            .unwrap()
            .iter()
            .map(|d| d.subscriber.id)
            .collect();
        assert_eq!(ids.len(), 24);
        let mut sent: Vec<i64> = Vec::new();
        for marks in ids.chunks(2) {
            let outcomes: Vec<(i64, DeliveryOutcome)> = sent
                .iter()
                .map(|id| {
                    let message_id = format!("<{id}@example.com>");
                    (*id, DeliveryOutcome::Sent { message_id })
                })
                .collect();
            let moved = s
                .ledger_record_and_mark(date, &holder, &outcomes, marks, now)
                .unwrap();
            assert_eq!(moved, vec![true; marks.len()]);
            sent = marks.to_vec();
        }
        // The connection the calls used (the pool gives back the last one).
        let mut c = s.conn().unwrap();
        let plans: Vec<(String, i64, i64)> = c
            .client
            .query(
                "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let (_, generic, custom) = plans
            .iter()
            .find(|(sql, _, _)| sql == RECORD_AND_MARK)
            .expect("the statement of the send is prepared on the connection");
        assert_eq!((*generic, *custom), (12, 0), "{plans:?}");
        assert!(plans.iter().all(|(_, _, custom)| *custom == 0), "{plans:?}");
    }

    /// A claim sets the holder of its rows without a new index entry for any
    /// of them (a heap-only update, on the row's page).
    #[test]
    fn a_claim_updates_its_rows_in_place() {
        let (mut c, date) = enqueued(600);
        let mut tx = c.transaction().unwrap();
        let claim = tx.prepare(&claim_sql()).unwrap();
        let holder = "sender-a-rather-long-host-name.example.com-4194304-0123abcd";
        let claimed = tx
            .query(&claim, &[&date, &holder, &500i64, &i64::MIN])
            .unwrap()
            .len();
        assert_eq!(claimed, 500);
        // This transaction's counts.
        let (updated, in_place): (i64, i64) = tx
            .query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
                 WHERE relname = 'deliveries'",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((updated, in_place), (500, 500));
    }

    #[test]
    fn an_enqueue_over_many_ids_goes_in_two_halves_that_cover_each_id_once() {
        assert_eq!(enqueue_ranges(1, 10), vec![(1, 10)]);
        assert_eq!(
            enqueue_ranges(1, ENQUEUE_SPLIT_AT),
            vec![
                (1, 1 + (ENQUEUE_SPLIT_AT - 1) / 2),
                (2 + (ENQUEUE_SPLIT_AT - 1) / 2, ENQUEUE_SPLIT_AT)
            ]
        );
        let (lo, hi) = (7, 1_000_006);
        let halves = enqueue_ranges(lo, hi);
        assert_eq!(halves.len(), 2);
        assert_eq!((halves[0].0, halves[1].1), (lo, hi));
        assert_eq!(halves[0].1 + 1, halves[1].0, "no id twice, none left out");
        assert!((halves[0].1 - halves[0].0).abs_diff(halves[1].1 - halves[1].0) <= 1);
    }

    /// Ids far apart: the enqueue goes in two halves, and still takes every
    /// active subscriber once, up to the cut-off id.
    #[test]
    fn an_enqueue_in_two_halves_takes_every_active_subscriber_once_up_to_the_cut_off() {
        let url = test_cluster::fresh_database();
        let s = PgStore::open(&url).unwrap();
        let mut c = Client::connect(&url, NoTls).unwrap();
        c.execute(
            "INSERT INTO subscribers (id, email, email_key, link_key, status, created_at, updated_at)
             SELECT i, 'r' || i || '@example.com', 'r' || i || '@example.com', 'k' || i,
                    CASE WHEN i % 10 = 3 THEN 'unsubscribed' ELSE 'active' END, now(), now()
             FROM generate_series(1, 10) AS i
             UNION ALL
             SELECT i, 'r' || i || '@example.com', 'r' || i || '@example.com', 'k' || i,
                    'active', now(), now()
             FROM generate_series(300001, 300010) AS i",
            &[],
        )
        .unwrap();
        assert_eq!(enqueue_ranges(1, 300_010).len(), 2);
        let date = NaiveDate::from_ymd_opt(2026, 3, 2).unwrap();
        assert_eq!(s.ledger_enqueue(date, Some(300_005)).unwrap(), 9 + 5);
        assert_eq!(s.ledger_enqueue(date, None).unwrap(), 5, "the rest, once");
        assert_eq!(s.ledger_enqueue(date, None).unwrap(), 0);
        let rows: Vec<(i64, i64)> = c
            .query(
                "SELECT COUNT(*), COUNT(DISTINCT subscriber_id) FROM deliveries
                 WHERE issue_date = $1 AND state = 'pending'",
                &[&date],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(rows, vec![(19, 19)]);
    }

    /// The mark (pending to sending) and the outcome (sending to sent) change
    /// no indexed column: each is an update in place (heap-only), as the
    /// claim is. With the state indexed (before migration 7), none of them was.
    #[test]
    fn a_mark_and_an_outcome_update_their_rows_in_place() {
        let (mut c, date) = enqueued(600);
        // Every tenth row: each page has room for their new versions without
        // pruning the old ones (which a transaction of another database, open
        // meanwhile, may prevent).
        let ids: Vec<i64> = (1..=600).step_by(10).collect();
        let holder = "sender-a-rather-long-host-name.example.com-4194304-0123abcd";
        let both = c.prepare(RECORD_AND_MARK).unwrap();
        let at = crate::clock::now();
        let none: Vec<i64> = Vec::new();
        let no_text: Vec<Option<String>> = Vec::new();
        let sent = vec![Some("sent".to_string()); ids.len()];
        let no_error: Vec<Option<String>> = vec![None; ids.len()];
        let message_ids: Vec<Option<String>> = ids
            .iter()
            .map(|i| Some(format!("<{i}@example.com>")))
            .collect();
        let steps: [(&str, [&(dyn ToSql + Sync); 8]); 2] = [
            (
                "mark",
                [
                    &date, &none, &no_text, &no_text, &no_text, &at, &ids, &holder,
                ],
            ),
            (
                "outcome",
                [
                    &date,
                    &ids,
                    &sent,
                    &no_error,
                    &message_ids,
                    &at,
                    &none,
                    &holder,
                ],
            ),
        ];
        // The counts of this connection, this transaction's included.
        let counts = |tx: &mut postgres::Transaction<'_>| -> (i64, i64) {
            tx.query_one(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
                 WHERE relname = 'deliveries'",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap()
        };
        for (step, params) in steps {
            let mut tx = c.transaction().unwrap();
            let before = counts(&mut tx);
            tx.query(&both, &params).unwrap();
            let after = counts(&mut tx);
            tx.commit().unwrap();
            assert_eq!(
                (after.0 - before.0, after.1 - before.1),
                (60, 60),
                "{step}: rows updated, of which in place"
            );
        }
        let sent: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND message_id IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(sent, 60);
    }

    /// A claim reads the issue's rows from the cursor on and stops at the
    /// limit, and updates the rows it picked by key, with or without
    /// statistics on the ledger (a past issue, all sent, beside it).
    #[test]
    fn a_claim_reads_from_its_cursor_and_updates_its_rows_by_key_whatever_the_statistics_say() {
        let claim = claim_sql();
        for analyzed in [false, true] {
            let plans = generic_plans(&[(&claim, "'2026-03-02', 'h', 128, 0")], analyzed);
            let (_, plan) = &plans[0];
            // A hash join of the picked rows with the ledger read every row of
            // the issue at each claim; so does a sequential scan, or a bitmap
            // of every row above the cursor (sorted afterwards).
            for walk in ["Seq Scan", "Hash", "Sort Key: deliveries"] {
                assert!(!plan.contains(walk), "statistics: {analyzed}\n{plan}");
            }
            assert!(
                !plan
                    .lines()
                    .any(|l| l.contains("Recheck Cond") && l.contains("> $4")),
                "statistics: {analyzed}\n{plan}"
            );
            assert!(
                plan.contains("ANY ($"),
                "the update goes by key, statistics: {analyzed}\n{plan}"
            );
            // In subscriber order through the primary key, from the cursor:
            // not through the subscriber's index, filtering every past issue out.
            assert!(
                plan.lines().any(|l| l.contains("Index Cond")
                    && l.contains("issue_date = $1")
                    && l.contains("subscriber_id > $4")),
                "statistics: {analyzed}\n{plan}"
            );
        }
    }

    /// Whether the store's connection is encrypted, as the server sees it.
    fn encrypted(s: &PgStore) -> bool {
        s.query(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()[0]
            .get(0)
    }

    #[test]
    fn sslmode_verify_full_connects_over_tls_checking_the_certificate_against_the_ca_file() {
        let url = test_cluster::fresh_database();
        let ca = test_cluster::cluster().ca_file.display().to_string();
        let plain = PgStore::open(&url).unwrap();
        assert!(!encrypted(&plain), "without sslmode, as before: in clear");
        for mode in ["verify-full", "require"] {
            let s = PgStore::open(&format!("{url}?sslmode={mode}&sslrootcert={ca}")).unwrap();
            assert!(encrypted(&s), "{mode}");
            s.upsert_subscriber(&active("tls@example.com")).unwrap();
        }
        // With a name the certificate does not carry, or without the CA file:
        // refused, never in clear.
        let other_name = url.replace("@127.0.0.1:", "@localhost:");
        let url_ip = format!("{other_name}?sslmode=verify-full&sslrootcert={ca}");
        let err = PgStore::open(&url_ip).unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
        let err = PgStore::open(&format!("{url}?sslmode=verify-full"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn no_connection_slot_left_on_the_server_is_busy() {
        let url = test_cluster::fresh_database();
        let role = format!("lim_{}", url.rsplit('/').next().unwrap());
        let mut admin = Client::connect(&url, NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 1"))
            .unwrap();
        let as_role = url.replace("postgres://postgres@", &format!("postgres://{role}@"));
        let _only_slot = Client::connect(&as_role, NoTls).unwrap();
        let err = PgStore::open(&as_role).unwrap_err();
        assert!(matches!(err, StoreError::Busy(_)), "{err}");
        assert!(err.to_string().contains("53300"), "{err}");
    }

    #[test]
    fn a_migration_numbered_below_the_highest_applied_is_still_applied() {
        let url = test_cluster::fresh_database();
        let mut c = Client::connect(&url, NoTls).unwrap();
        let mut list = MIGRATIONS.to_vec();
        list.push((90, "later", "CREATE TABLE t90 (x INTEGER)"));
        migrate_with(&mut c, &list).unwrap();
        list.insert(
            list.len() - 1,
            (80, "between", "CREATE TABLE t80 (x INTEGER)"),
        );
        migrate_with(&mut c, &list).unwrap();
        migrate_with(&mut c, &list).unwrap();
        let tables: i64 = c
            .query_one(
                "SELECT COUNT(*) FROM pg_tables WHERE tablename IN ('t80', 't90')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tables, 2);
        let applied: i64 = c
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(applied, list.len() as i64);
    }

    #[test]
    fn migrations_apply_once_and_reopening_keeps_the_data() {
        let url = test_cluster::fresh_database();
        {
            let s = PgStore::open(&url).unwrap();
            assert_eq!(s.schema_version().unwrap(), latest());
            s.upsert_subscriber(&active("a@example.com")).unwrap();
        }
        let s = PgStore::open(&url).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest());
        let applied: i64 = s
            .conn()
            .unwrap()
            .client
            .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(applied, MIGRATIONS.len() as i64);
        assert!(s
            .subscriber_by_email(&email("a@example.com"))
            .unwrap()
            .is_some());
    }

    #[test]
    fn processes_starting_together_on_a_new_database_migrate_it_once() {
        let url = test_cluster::fresh_database();
        let opened: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || PgStore::open(&url).map(|s| s.schema_version()))
            })
            .collect();
        for h in opened {
            assert_eq!(h.join().unwrap().unwrap().unwrap(), latest());
        }
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let url = test_cluster::fresh_database();
        drop(PgStore::open(&url).unwrap());
        let mut c = Client::connect(&url, NoTls).unwrap();
        c.batch_execute("INSERT INTO schema_migrations VALUES (999, 'future', now())")
            .unwrap();
        let err = PgStore::open(&url).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    /// The client blocks on a runtime of its own: used (and closed) from async
    /// code on either kind of runtime, it must not try to start one inside another.
    fn used_and_dropped_in_async_code() {
        // (The test's own client, which makes the database, blocks too.)
        let url = std::thread::spawn(test_cluster::fresh_database)
            .join()
            .unwrap();
        let s = PgStore::open(&url).unwrap();
        s.upsert_subscriber(&active("a@example.com")).unwrap();
        assert!(s
            .subscriber_by_email(&email("A@example.com"))
            .unwrap()
            .is_some());
        drop(s);
    }

    #[tokio::test]
    async fn the_store_works_and_closes_inside_a_single_threaded_runtime() {
        used_and_dropped_in_async_code();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_works_and_closes_inside_a_multi_threaded_runtime() {
        used_and_dropped_in_async_code();
    }

    #[test]
    fn a_database_that_does_not_answer_is_named_in_the_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PgStore::open(&format!("postgres://reader:s3cret@127.0.0.1:{port}/news"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("127.0.0.1:{port}/news")), "{err}");
        assert!(
            !err.contains("s3cret"),
            "the password is never shown: {err}"
        );
        let err = PgStore::open("postgres://a@b:notaport/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a PostgreSQL URL"), "{err}");
    }
}
