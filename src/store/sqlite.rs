//! SQLite backend of [`super::Store`]. All SQL lives here.
//!
//! One file shared by several processes (two `serve`, a CLI import while serving):
//! WAL journal, a busy timeout, and every read-modify-write in a `BEGIN IMMEDIATE`
//! transaction so that two connections never claim the same ledger row.
//! `synchronous = NORMAL`: a killed process loses nothing it committed; only a power
//! cut can lose the last transactions (never corrupt the file).

use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use super::{
    Delivery, DeliveryOutcome, DeliveryState, Holder, LedgerCounts, NewSubscriber, PendingSignup,
    RunRecord, RunStatus, SenderSeen, Store, StoreError, StoreResult, Suppression,
    SuppressionReason, TakeOver, Upserted,
};
use crate::config::Config;
use crate::domain::{LinkKey, Locale, Subscriber, SubscriberEmail, SubscriberStatus};

/// Schema migrations, applied in order, each recorded in `schema_migrations`.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "identity", include_str!("migrations/0002_identity.sql")),
    (
        3,
        "bounce_events",
        include_str!("migrations/0003_bounce_events.sql"),
    ),
    (4, "senders", include_str!("migrations/0004_senders.sql")),
    (5, "issues", include_str!("migrations/0005_issues.sql")),
];

mod bounces;
mod dump;
mod issues;

/// How long a statement waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The columns [`subscriber_from_row`] reads, in its order.
const SUB_COLS: &str =
    "s.id, s.email, s.name, s.locale, s.categories, s.timezone, s.status, s.link_key";

/// A store in one SQLite file (or in memory).
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// A second connection for reads (file databases): in WAL mode it never
    /// waits for a writer, so pages and health checks answer while another
    /// process holds the write lock.
    read: Option<Mutex<Connection>>,
    /// Keys the hashes of suppressed addresses (`settings.suppression_key`).
    suppression_key: Vec<u8>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(e.to_string())
        }
        _ => StoreError::Db(e.to_string()),
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn bad_column(i: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, msg.into())
}

pub(super) fn join_categories(c: &[String]) -> String {
    c.join(";")
}

pub(super) fn split_categories(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

/// Reads the [`SUB_COLS`] starting at column `base`.
fn subscriber_from_row(row: &Row<'_>, base: usize) -> rusqlite::Result<Subscriber> {
    let id: i64 = row.get(base)?;
    let email: String = row.get(base + 1)?;
    let email = SubscriberEmail::parse(&email).map_err(|e| bad_column(base + 1, e))?;
    let locale: Option<String> = row.get(base + 3)?;
    let locale = locale
        .map(|l| Locale::from_str(&l).map_err(|e| bad_column(base + 3, e.to_string())))
        .transpose()?;
    let categories: String = row.get(base + 4)?;
    let timezone: Option<String> = row.get(base + 5)?;
    let timezone = timezone
        .map(|t| chrono_tz::Tz::from_str(&t).map_err(|e| bad_column(base + 5, e.to_string())))
        .transpose()?;
    let status: String = row.get(base + 6)?;
    let status = SubscriberStatus::from_str(&status).map_err(|e| bad_column(base + 6, e))?;
    let link_key: String = row.get(base + 7)?;
    let link_key = LinkKey::from_str(&link_key).map_err(|e| bad_column(base + 7, e))?;
    Ok(Subscriber {
        id,
        link_key,
        email,
        name: row.get(base + 2)?,
        locale,
        categories: split_categories(&categories),
        timezone,
        status,
    })
}

fn parse_time(s: &str, col: usize) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad_column(col, format!("bad timestamp {s:?}: {e}")))
}

fn parse_day(s: &str, col: usize) -> rusqlite::Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| bad_column(col, format!("bad date {s:?}: {e}")))
}

/// The status an existing subscriber keeps or takes when an upsert asks for `asked`.
/// Unsubscribed is final (only the subscriber can come back, through a confirmed
/// sign-up); a bounced address stays bounced unless it is now unsubscribed.
pub(super) fn merged_status(old: SubscriberStatus, asked: SubscriberStatus) -> SubscriberStatus {
    match (old, asked) {
        (SubscriberStatus::Unsubscribed, _) => SubscriberStatus::Unsubscribed,
        (SubscriberStatus::Bounced, SubscriberStatus::Unsubscribed) => {
            SubscriberStatus::Unsubscribed
        }
        (SubscriberStatus::Bounced, _) => SubscriberStatus::Bounced,
        (_, asked) => asked,
    }
}

/// One upsert inside the caller's transaction.
fn upsert_in(
    conn: &Connection,
    new: &NewSubscriber,
    now: &str,
    suppression_key: &[u8],
) -> rusqlite::Result<Upserted> {
    let key = new.email.key();
    let key = key.as_str();
    let old = conn
        .prepare_cached(
            "SELECT id, name, locale, categories, timezone, status
             FROM subscribers WHERE email_key = ?1",
        )?
        .query_row([key], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .optional()?;
    let new_locale = new.locale.map(|l| l.code().to_string());
    let new_tz = new.timezone.map(|t| t.name().to_string());
    let Some((id, name, locale, categories, timezone, status)) = old else {
        if suppression_in(conn, suppression_key, &new.email)?.is_some() {
            return Ok(Upserted::Suppressed);
        }
        let unsubscribed_at = (new.status == SubscriberStatus::Unsubscribed).then_some(now);
        conn.prepare_cached(
            "INSERT INTO subscribers
               (email, email_key, name, locale, categories, timezone, status,
                status_reason, created_at, updated_at, unsubscribed_at)
             VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, 'added', ?7, ?7, ?8)",
        )?
        .execute(params![
            key,
            new.name,
            new_locale,
            join_categories(&new.categories),
            new_tz,
            new.status.as_str(),
            now,
            unsubscribed_at,
            new.email.as_str(),
        ])?;
        return Ok(Upserted::Inserted);
    };
    let old_status = SubscriberStatus::from_str(&status).map_err(|e| bad_column(5, e))?;
    // Absent fields keep what is stored: an import adds information, it does not erase it.
    let m_name = new.name.clone().or(name.clone());
    let m_locale = new_locale.or(locale.clone());
    let m_categories = if new.categories.is_empty() {
        categories.clone()
    } else {
        join_categories(&new.categories)
    };
    let m_tz = new_tz.or(timezone.clone());
    let m_status = merged_status(old_status, new.status);
    if m_name == name
        && m_locale == locale
        && m_categories == categories
        && m_tz == timezone
        && m_status == old_status
    {
        return Ok(Upserted::Unchanged);
    }
    let status_changed = m_status != old_status;
    conn.prepare_cached(
        "UPDATE subscribers SET name = ?2, locale = ?3, categories = ?4, timezone = ?5,
           status = ?6, updated_at = ?7,
           status_reason = CASE WHEN ?8 THEN 'updated' ELSE status_reason END,
           unsubscribed_at = CASE WHEN ?8 AND ?6 = 'unsubscribed' THEN ?7 ELSE unsubscribed_at END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        m_name,
        m_locale,
        m_categories,
        m_tz,
        m_status.as_str(),
        now,
        status_changed,
    ])?;
    Ok(Upserted::Updated)
}

/// The keyed hash under which a suppressed address is remembered: HMAC-SHA256 of
/// its normalised form, so that the table alone does not list the addresses.
pub(super) fn address_hash(key: &[u8], email: &SubscriberEmail) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(email.key().as_bytes());
    crate::config::hex(&m.finalize().into_bytes())
}

fn suppression_in(
    conn: &Connection,
    key: &[u8],
    email: &SubscriberEmail,
) -> rusqlite::Result<Option<Suppression>> {
    conn.prepare_cached("SELECT reason, created_at FROM suppressions WHERE address_hash = ?1")?
        .query_row([address_hash(key, email)], |r| {
            let reason: String = r.get(0)?;
            let at: String = r.get(1)?;
            Ok(Suppression {
                reason: SuppressionReason::from_str(&reason).map_err(|e| bad_column(0, e))?,
                at: parse_time(&at, 1)?,
            })
        })
        .optional()
}

fn suppress_in(
    conn: &Connection,
    key: &[u8],
    email: &SubscriberEmail,
    reason: SuppressionReason,
    at: &str,
) -> rusqlite::Result<()> {
    // A later reason replaces an earlier one, except that "forgotten" stays.
    conn.prepare_cached(
        "INSERT INTO suppressions (address_hash, reason, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (address_hash) DO UPDATE SET reason = excluded.reason,
           created_at = excluded.created_at
         WHERE suppressions.reason <> 'forgotten'",
    )?
    .execute(params![address_hash(key, email), reason.as_str(), at])?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    migrate_with(conn, MIGRATIONS)
}

/// Applies every migration of `migrations` the database has not applied yet,
/// in order: also one numbered below the highest applied (two branches each
/// adding one, merged in either order).
fn migrate_with(conn: &mut Connection, migrations: &[(i64, &str, &str)]) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )
    .map_err(db)?;
    // IMMEDIATE: two processes opening a new file at once apply each migration once.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let applied: std::collections::HashSet<i64> = tx
        .prepare("SELECT version FROM schema_migrations")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(db)?;
    let current = applied.iter().copied().max().unwrap_or(0);
    let latest = migrations.last().map(|m| m.0).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Invalid(format!(
            "the database has schema version {current}, newer than this digestif knows \
             ({latest}): upgrade digestif"
        )));
    }
    let now = ts(crate::clock::now());
    for (version, name, sql) in migrations.iter().filter(|m| !applied.contains(&m.0)) {
        tx.execute_batch(sql).map_err(|e| {
            StoreError::Db(format!("schema migration {version:04}_{name} failed: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, now],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

impl SqliteStore {
    /// Opens (creating on first use, with its folder) the database file and brings
    /// its schema up to date.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Db(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", path.display())))?;
        let mut store = Self::setup(conn, true)
            .map_err(|e| StoreError::Db(format!("database {}: {e}", path.display())))?;
        let read = Connection::open(path)
            .and_then(|c| {
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;")?;
                Ok(c)
            })
            .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", path.display())))?;
        store.read = Some(Mutex::new(read));
        Ok(store)
    }

    /// A private in-memory database (tests, `sqlite::memory:`).
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        Self::setup(Connection::open_in_memory().map_err(db)?, false)
    }

    /// The database named by `[storage] database`.
    pub fn for_config(cfg: &Config) -> StoreResult<SqliteStore> {
        if crate::config::is_postgres_url(&cfg.storage.database) {
            return Err(StoreError::Invalid(
                "storage.database names a PostgreSQL database, not a SQLite file".into(),
            ));
        }
        match cfg.database_path() {
            Some(p) => Self::open(&p),
            None => Self::open_in_memory(),
        }
    }

    fn setup(mut conn: Connection, file: bool) -> StoreResult<SqliteStore> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        if file {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(db)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Db(format!(
                    "cannot switch to WAL journal (got {mode:?}): is the file on a network share?"
                )));
            }
        }
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA foreign_keys = ON;
             PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY;
             PRAGMA wal_autocheckpoint = 10000;",
        )
        .map_err(db)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        let suppression_key: String = conn
            .query_row(
                "SELECT value FROM settings WHERE name = 'suppression_key'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            read: None,
            suppression_key: suppression_key.into_bytes(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic mid-call dropped its transaction (rolled back): the connection is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection for plain reads: the read connection of a file database.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        match &self.read {
            Some(r) => r.lock().unwrap_or_else(|p| p.into_inner()),
            None => self.conn(),
        }
    }

    /// How long a write waits for another process's lock before the call fails
    /// with [`StoreError::Busy`] (SQLite retries meanwhile). The service's HTTP
    /// side uses a short one, so that a visitor gets "try again" rather than a hang.
    pub fn set_busy_timeout(&self, wait: Duration) -> StoreResult<()> {
        self.conn().busy_timeout(wait).map_err(db)?;
        if let Some(r) = &self.read {
            r.lock()
                .unwrap_or_else(|p| p.into_inner())
                .busy_timeout(wait)
                .map_err(db)?;
        }
        Ok(())
    }

    /// Deletes the subscriber (their ledger rows cascade) and any pending sign-up
    /// of `email`, keeping only a suppression record: `reason`, else what their
    /// status says (unsubscribed, bounced, or removed by the operator). Whether a
    /// subscriber or a sign-up was found.
    fn erase(
        &self,
        email: &SubscriberEmail,
        reason: Option<SuppressionReason>,
    ) -> StoreResult<bool> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let key = email.key();
        let status: Option<String> = tx
            .query_row(
                "DELETE FROM subscribers WHERE email_key = ?1 RETURNING status",
                [&key],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let signups = tx
            .execute("DELETE FROM signups WHERE email_key = ?1", [&key])
            .map_err(db)?;
        let reason = reason.or(match status.as_deref() {
            Some("unsubscribed") => Some(SuppressionReason::Unsubscribed),
            Some("bounced") => Some(SuppressionReason::Bounced),
            Some(_) => Some(SuppressionReason::Removed),
            None => None,
        });
        if let Some(reason) = reason {
            suppress_in(
                &tx,
                &self.suppression_key,
                email,
                reason,
                &ts(crate::clock::now()),
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(status.is_some() || signups > 0)
    }

    /// The schema version applied to this database.
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn()
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(db)
    }

    /// Claims rows of `date` in `state`, at most `limit`, in subscriber order.
    /// Rows whose subscriber is no longer active are deleted from the ledger
    /// (they will not be sent; a later `ledger_enqueue` re-adds them only if they
    /// are active again).
    fn claim_state(
        tx: &Connection,
        date: &str,
        state: DeliveryState,
        limit: usize,
        now: &str,
        out: &mut Vec<Delivery>,
        issue: NaiveDate,
    ) -> rusqlite::Result<()> {
        let in_doubt = state == DeliveryState::Sending;
        // A cursor, not a re-query from the start: claimed in-doubt rows stay in `sending`.
        let mut after = i64::MIN;
        while out.len() < limit {
            let want = (limit - out.len()) as i64;
            let rows = Self::rows_after(tx, date, state, after, want)?;
            if rows.is_empty() {
                break;
            }
            for (attempts, subscriber) in rows {
                after = subscriber.id;
                if subscriber.status == SubscriberStatus::Active {
                    tx.prepare_cached(
                        "UPDATE deliveries SET state = 'sending', updated_at = ?3
                         WHERE issue_date = ?1 AND subscriber_id = ?2",
                    )?
                    .execute(params![date, subscriber.id, now])?;
                    out.push(Delivery {
                        date: issue,
                        subscriber,
                        attempts,
                        in_doubt,
                    });
                } else {
                    tx.prepare_cached(
                        "DELETE FROM deliveries WHERE issue_date = ?1 AND subscriber_id = ?2",
                    )?
                    .execute(params![date, subscriber.id])?;
                }
            }
        }
        Ok(())
    }

    /// Up to `want` rows of `date` in `state` with a subscriber id above `after`,
    /// in id order, with their subscriber.
    fn rows_after(
        conn: &Connection,
        date: &str,
        state: DeliveryState,
        after: i64,
        want: i64,
    ) -> rusqlite::Result<Vec<(u32, Subscriber)>> {
        // INDEXED BY: without statistics SQLite walks the primary key from the
        // first subscriber and skips every row already sent, which makes each
        // claim O(rows sent so far) and a whole send quadratic.
        conn.prepare_cached(&format!(
            "SELECT d.attempts, {SUB_COLS}
             FROM deliveries d INDEXED BY deliveries_by_state
             JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.issue_date = ?1 AND d.state = ?2 AND d.subscriber_id > ?4
             ORDER BY d.subscriber_id LIMIT ?3"
        ))?
        .query_map(params![date, state.as_str(), want, after], |r| {
            Ok((r.get(0)?, subscriber_from_row(r, 1)?))
        })?
        .collect()
    }

    /// Records `outcomes` inside the transaction `tx`.
    fn record_in(
        tx: &Connection,
        date: &str,
        outcomes: &[(i64, DeliveryOutcome)],
        at: &str,
    ) -> rusqlite::Result<()> {
        for (id, outcome) in outcomes {
            // A row already sent or failed is never moved back.
            let (state, error, message_id) = match outcome {
                DeliveryOutcome::Sent { message_id } => ("sent", None, Some(message_id.as_str())),
                DeliveryOutcome::Retry { error } => ("pending", Some(error.as_str()), None),
                DeliveryOutcome::Failed { error, .. } => ("failed", Some(error.as_str()), None),
            };
            tx.prepare_cached(
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1,
                   last_error = ?4, message_id = COALESCE(?5, message_id), updated_at = ?6
                 WHERE issue_date = ?1 AND subscriber_id = ?2
                   AND state IN ('pending', 'sending')",
            )?
            .execute(params![date, id, state, error, message_id, at])?;
            if let DeliveryOutcome::Failed {
                error,
                hard_bounce: true,
            } = outcome
            {
                tx.prepare_cached(
                    "UPDATE subscribers SET status = 'bounced', status_reason = ?2, updated_at = ?3
                     WHERE id = ?1 AND status <> 'unsubscribed'",
                )?
                .execute(params![id, error, at])?;
            }
        }
        Ok(())
    }
}

impl Store for SqliteStore {
    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted> {
        let mut outs = self.upsert_many(std::slice::from_ref(new))?;
        Ok(outs.pop().unwrap_or(Upserted::Unchanged))
    }

    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let now = ts(crate::clock::now());
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(
                upsert_in(&tx, row, &now, &self.suppression_key)
                    .map_err(|e| StoreError::Db(format!("upserting {}: {e}", row.email)))?,
            );
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.email_key = ?1"
            ))
            .map_err(db)?
            .query_row([email.key()], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.id = ?1"
            ))
            .map_err(db)?
            .query_row([id], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        self.erase(email, None)
    }

    fn forget_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        self.erase(email, Some(SuppressionReason::Forgotten))
    }

    fn suppression(&self, email: &SubscriberEmail) -> StoreResult<Option<Suppression>> {
        suppression_in(&self.reader(), &self.suppression_key, email).map_err(db)
    }

    fn lift_suppression(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM suppressions WHERE address_hash = ?1",
                [address_hash(&self.suppression_key, email)],
            )
            .map_err(db)?;
        Ok(n > 0)
    }

    fn subscriber_by_link_key(&self, key: &LinkKey) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.link_key = ?1"
            ))
            .map_err(db)?
            .query_row([key.to_string()], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn subscriber_by_legacy_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        self.reader()
            .prepare_cached(&format!(
                "SELECT {SUB_COLS} FROM subscribers s WHERE s.id = ?1 AND s.legacy_links = 1"
            ))
            .map_err(db)?
            .query_row([id], |r| subscriber_from_row(r, 0))
            .optional()
            .map_err(db)
    }

    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE subscribers SET status = ?2, status_reason = ?3, updated_at = ?4,
                   unsubscribed_at = CASE
                     WHEN ?2 = 'unsubscribed' AND status = 'unsubscribed' THEN unsubscribed_at
                     WHEN ?2 = 'unsubscribed' THEN ?4
                     ELSE unsubscribed_at END
                 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![id, status.as_str(), reason, ts(at)])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn set_preferences(
        &self,
        id: i64,
        locale: Option<Locale>,
        categories: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE subscribers SET locale = ?2, categories = ?3, updated_at = ?4 WHERE id = ?1",
            )
            .map_err(db)?
            .execute(params![
                id,
                locale.map(|l| l.code()),
                join_categories(categories),
                ts(at)
            ])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn subscribers_page(
        &self,
        status: Option<SubscriberStatus>,
        after_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<Subscriber>> {
        let conn = self.reader();
        let limit = limit as i64;
        let rows = match status {
            Some(st) => conn
                .prepare_cached(&format!(
                    "SELECT {SUB_COLS} FROM subscribers s
                     WHERE s.status = ?1 AND s.id > ?2 ORDER BY s.id LIMIT ?3"
                ))
                .map_err(db)?
                .query_map(params![st.as_str(), after_id, limit], |r| {
                    subscriber_from_row(r, 0)
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>(),
            None => conn
                .prepare_cached(&format!(
                    "SELECT {SUB_COLS} FROM subscribers s
                     WHERE s.id > ?1 ORDER BY s.id LIMIT ?2"
                ))
                .map_err(db)?
                .query_map(params![after_id, limit], |r| subscriber_from_row(r, 0))
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>(),
        };
        rows.map_err(db)
    }

    fn count_by_status(&self) -> StoreResult<Vec<(SubscriberStatus, u64)>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT status, COUNT(*) FROM subscribers GROUP BY status ORDER BY status",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                let s: String = r.get(0)?;
                let n: i64 = r.get(1)?;
                Ok((
                    SubscriberStatus::from_str(&s).map_err(|e| bad_column(0, e))?,
                    n as u64,
                ))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        Ok(rows)
    }

    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()> {
        let s = &signup.subscriber;
        self.conn()
            .prepare_cached(
                "INSERT INTO signups
                   (email_key, email, name, locale, categories, timezone, status, requested_at)
                 VALUES (?1, ?8, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (email_key) DO UPDATE SET
                   name = excluded.name, locale = excluded.locale,
                   categories = excluded.categories, timezone = excluded.timezone,
                   status = excluded.status, requested_at = excluded.requested_at",
            )
            .map_err(db)?
            .execute(params![
                s.email.key(),
                s.name,
                s.locale.map(|l| l.code()),
                join_categories(&s.categories),
                s.timezone.map(|t| t.name()),
                s.status.as_str(),
                ts(signup.requested_at),
                s.email.as_str(),
            ])
            .map_err(db)?;
        Ok(())
    }

    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>> {
        self.conn()
            .prepare_cached(
                "DELETE FROM signups WHERE email_key = ?1
                 RETURNING email, name, locale, categories, timezone, status, requested_at",
            )
            .map_err(db)?
            .query_row([email.key()], |r| {
                let email: String = r.get(0)?;
                let locale: Option<String> = r.get(2)?;
                let categories: String = r.get(3)?;
                let timezone: Option<String> = r.get(4)?;
                let status: String = r.get(5)?;
                let requested_at: String = r.get(6)?;
                Ok(PendingSignup {
                    subscriber: NewSubscriber {
                        email: SubscriberEmail::parse(&email).map_err(|e| bad_column(0, e))?,
                        name: r.get(1)?,
                        locale: locale
                            .map(|l| Locale::from_str(&l).map_err(|e| bad_column(2, e.to_string())))
                            .transpose()?,
                        categories: split_categories(&categories),
                        timezone: timezone
                            .map(|t| {
                                chrono_tz::Tz::from_str(&t)
                                    .map_err(|e| bad_column(4, e.to_string()))
                            })
                            .transpose()?,
                        status: SubscriberStatus::from_str(&status)
                            .map_err(|e| bad_column(5, e))?,
                    },
                    requested_at: parse_time(&requested_at, 6)?,
                })
            })
            .optional()
            .map_err(db)
    }

    fn claim_confirmation_mail(
        &self,
        email: &SubscriberEmail,
        now: DateTime<Utc>,
        cooldown: chrono::Duration,
    ) -> StoreResult<bool> {
        let n = self
            .conn()
            .prepare_cached(
                "UPDATE signups SET mailed_at = ?2
                 WHERE email_key = ?1 AND (mailed_at IS NULL OR mailed_at <= ?3)",
            )
            .map_err(db)?
            .execute(params![email.key(), ts(now), ts(now - cooldown)])
            .map_err(db)?;
        Ok(n > 0)
    }

    fn purge_signups(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let n = self
            .conn()
            .execute("DELETE FROM signups WHERE requested_at < ?1", [ts(before)])
            .map_err(db)?;
        Ok(n as u64)
    }

    fn ledger_enqueue(&self, date: NaiveDate, max_id: Option<i64>) -> StoreResult<u64> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let n = tx
            .prepare_cached(
                "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, updated_at)
                 SELECT ?1, id, 'pending', 0, ?3 FROM subscribers
                 WHERE status = 'active' AND (?2 IS NULL OR id <= ?2)
                 ON CONFLICT (issue_date, subscriber_id) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![day(date), max_id, ts(crate::clock::now())])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(n as u64)
    }

    fn ledger_enqueue_in_zones(
        &self,
        date: NaiveDate,
        zones: &[String],
        with_unzoned: bool,
    ) -> StoreResult<u64> {
        let zones = serde_json::to_string(zones).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let n = tx
            .prepare_cached(
                "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, updated_at)
                 SELECT ?1, id, 'pending', 0, ?2 FROM subscribers
                 WHERE status = 'active'
                   AND ((timezone IS NULL AND ?3)
                        OR timezone IN (SELECT value FROM json_each(?4)))
                 ON CONFLICT (issue_date, subscriber_id) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![
                day(date),
                ts(crate::clock::now()),
                with_unzoned,
                zones
            ])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(n as u64)
    }

    fn ledger_claim(
        &self,
        date: NaiveDate,
        limit: usize,
        include_in_doubt: bool,
    ) -> StoreResult<Vec<Delivery>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let d = day(date);
        let now = ts(crate::clock::now());
        let mut out = Vec::with_capacity(limit.min(10_000));
        if include_in_doubt {
            Self::claim_state(&tx, &d, DeliveryState::Sending, limit, &now, &mut out, date)
                .map_err(db)?;
        }
        Self::claim_state(&tx, &d, DeliveryState::Pending, limit, &now, &mut out, date)
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn ledger_record(
        &self,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        Self::record_in(&tx, &day(date), outcomes, &ts(at)).map_err(db)?;
        tx.commit().map_err(db)
    }

    fn ledger_next(&self, date: NaiveDate, after: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        let conn = self.conn();
        let d = day(date);
        let mut out = Vec::with_capacity(limit.min(10_000));
        let mut after = after;
        while out.len() < limit {
            let want = (limit - out.len()) as i64;
            let rows =
                Self::rows_after(&conn, &d, DeliveryState::Pending, after, want).map_err(db)?;
            if rows.is_empty() {
                break;
            }
            for (attempts, subscriber) in rows {
                after = subscriber.id;
                if subscriber.status == SubscriberStatus::Active {
                    out.push(Delivery {
                        date,
                        subscriber,
                        attempts,
                        in_doubt: false,
                    });
                } else {
                    conn.prepare_cached(
                        "DELETE FROM deliveries
                         WHERE issue_date = ?1 AND subscriber_id = ?2 AND state = 'pending'",
                    )
                    .map_err(db)?
                    .execute(params![d, subscriber.id])
                    .map_err(db)?;
                }
            }
        }
        Ok(out)
    }

    fn ledger_record_and_mark(
        &self,
        date: NaiveDate,
        holder: &Holder,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let d = day(date);
        let now = ts(at);
        Self::record_in(&tx, &d, outcomes, &now).map_err(db)?;
        let mut out = Vec::with_capacity(marks.len());
        for id in marks {
            let moved = tx
                .prepare_cached(
                    "UPDATE deliveries SET state = 'sending', holder = ?4, updated_at = ?3
                     WHERE issue_date = ?1 AND subscriber_id = ?2 AND state = 'pending'
                       AND (holder IS NULL OR holder = ?4)
                       AND EXISTS (SELECT 1 FROM subscribers WHERE id = ?2 AND status = 'active')",
                )
                .map_err(db)?
                .execute(params![d, id, now, holder.as_str()])
                .map_err(db)?;
            if moved == 0 {
                // Unsubscribed (or bounced) since it was read: out of this issue.
                tx.prepare_cached(
                    "DELETE FROM deliveries
                     WHERE issue_date = ?1 AND subscriber_id = ?2 AND state = 'pending'
                       AND NOT EXISTS (SELECT 1 FROM subscribers WHERE id = ?2 AND status = 'active')",
                )
                .map_err(db)?
                .execute(params![d, id])
                .map_err(db)?;
            }
            out.push(moved == 1);
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn sender_seen(&self, date: NaiveDate, holder: &Holder, now: DateTime<Utc>) -> StoreResult<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO senders (holder, issue_date, started_at, last_seen)
                 VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (holder) DO UPDATE
                 SET issue_date = excluded.issue_date, last_seen = excluded.last_seen",
            )
            .map_err(db)?
            .execute(params![holder.as_str(), day(date), ts(now)])
            .map_err(db)?;
        Ok(())
    }

    fn senders(&self, date: NaiveDate) -> StoreResult<Vec<SenderSeen>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT holder, last_seen FROM senders WHERE issue_date = ?1
                 ORDER BY started_at, holder",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([day(date)], |r| {
                Ok(SenderSeen {
                    holder: Holder::new(r.get::<_, String>(0)?),
                    last_seen: parse_time(&r.get::<_, String>(1)?, 1)?,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
    }

    fn ledger_claim_for(
        &self,
        date: NaiveDate,
        holder: &Holder,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let d = day(date);
        let mut out = Vec::with_capacity(limit.min(10_000));
        while out.len() < limit {
            let want = (limit - out.len()) as i64;
            let rows = tx
                .prepare_cached(&format!(
                    "SELECT d.attempts, {SUB_COLS}
                     FROM deliveries d INDEXED BY deliveries_by_state
                     JOIN subscribers s ON s.id = d.subscriber_id
                     WHERE d.issue_date = ?1 AND d.state = 'pending' AND d.holder IS NULL
                     ORDER BY d.subscriber_id LIMIT ?2"
                ))
                .map_err(db)?
                .query_map(params![d, want], |r| {
                    Ok((r.get::<_, u32>(0)?, subscriber_from_row(r, 1)?))
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
            let got = rows.len() as i64;
            for (attempts, subscriber) in rows {
                if subscriber.status == SubscriberStatus::Active {
                    tx.prepare_cached(
                        "UPDATE deliveries SET holder = ?3
                         WHERE issue_date = ?1 AND subscriber_id = ?2",
                    )
                    .map_err(db)?
                    .execute(params![d, subscriber.id, holder.as_str()])
                    .map_err(db)?;
                    out.push(Delivery {
                        date,
                        subscriber,
                        attempts,
                        in_doubt: false,
                    });
                } else {
                    tx.prepare_cached(
                        "DELETE FROM deliveries WHERE issue_date = ?1 AND subscriber_id = ?2",
                    )
                    .map_err(db)?
                    .execute(params![d, subscriber.id])
                    .map_err(db)?;
                }
            }
            if got < want {
                break;
            }
        }
        tx.commit().map_err(db)?;
        Ok(out)
    }

    fn ledger_take_over(
        &self,
        date: NaiveDate,
        holder: &Holder,
        gone: &[Holder],
        now: DateTime<Utc>,
    ) -> StoreResult<TakeOver> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let d = day(date);
        let me = holder.as_str();
        for g in gone {
            tx.prepare_cached("DELETE FROM senders WHERE holder = ?1")
                .map_err(db)?
                .execute([g.as_str()])
                .map_err(db)?;
        }
        let orphaned = "(d.holder IS NULL OR NOT EXISTS (
                            SELECT 1 FROM senders h WHERE h.holder = d.holder))";
        let rows = tx
            .prepare_cached(&format!(
                "SELECT d.attempts, {SUB_COLS}
                 FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.issue_date = ?1 AND d.state = 'sending' AND d.holder IS NOT ?2
                   AND {orphaned}
                 ORDER BY d.subscriber_id"
            ))
            .map_err(db)?
            .query_map(params![d, me], |r| {
                Ok((r.get::<_, u32>(0)?, subscriber_from_row(r, 1)?))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        let mut found = TakeOver::default();
        for (attempts, subscriber) in rows {
            if subscriber.status == SubscriberStatus::Active {
                tx.prepare_cached(
                    "UPDATE deliveries SET holder = ?3, updated_at = ?4
                     WHERE issue_date = ?1 AND subscriber_id = ?2",
                )
                .map_err(db)?
                .execute(params![d, subscriber.id, me, ts(now)])
                .map_err(db)?;
                found.in_doubt.push(Delivery {
                    date,
                    subscriber,
                    attempts,
                    in_doubt: true,
                });
            } else {
                tx.prepare_cached(
                    "DELETE FROM deliveries WHERE issue_date = ?1 AND subscriber_id = ?2",
                )
                .map_err(db)?
                .execute(params![d, subscriber.id])
                .map_err(db)?;
            }
        }
        found.released = tx
            .prepare_cached(&format!(
                "UPDATE deliveries AS d SET holder = NULL
                 WHERE d.issue_date = ?1 AND d.state = 'pending'
                   AND d.holder IS NOT NULL AND d.holder <> ?2 AND {orphaned}"
            ))
            .map_err(db)?
            .execute(params![d, me])
            .map_err(db)? as u64;
        let held: i64 = tx
            .prepare_cached(
                "SELECT COUNT(*) FROM deliveries
                 WHERE issue_date = ?1 AND state IN ('pending', 'sending')
                   AND holder IS NOT NULL AND holder <> ?2",
            )
            .map_err(db)?
            .query_row(params![d, me], |r| r.get(0))
            .map_err(db)?;
        found.held_elsewhere = held as u64;
        tx.commit().map_err(db)?;
        Ok(found)
    }

    fn ledger_release(&self, date: NaiveDate, holder: &Holder) -> StoreResult<()> {
        self.conn()
            .prepare_cached(
                "UPDATE deliveries SET holder = NULL
                 WHERE issue_date = ?1 AND state = 'pending' AND holder = ?2",
            )
            .map_err(db)?
            .execute(params![day(date), holder.as_str()])
            .map_err(db)?;
        Ok(())
    }

    fn sender_left(&self, holder: &Holder) -> StoreResult<()> {
        self.conn()
            .prepare_cached("DELETE FROM senders WHERE holder = ?1")
            .map_err(db)?
            .execute([holder.as_str()])
            .map_err(db)?;
        Ok(())
    }

    fn ledger_counts(&self, date: NaiveDate) -> StoreResult<LedgerCounts> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT state, COUNT(*) FROM deliveries WHERE issue_date = ?1 GROUP BY state",
            )
            .map_err(db)?;
        let mut rows = stmt.query([day(date)]).map_err(db)?;
        let mut c = LedgerCounts::default();
        while let Some(r) = rows.next().map_err(db)? {
            let state: String = r.get(0).map_err(db)?;
            let n: i64 = r.get(1).map_err(db)?;
            let n = n as u64;
            match state.as_str() {
                "pending" => c.pending = n,
                "sending" => c.sending = n,
                "sent" => c.sent = n,
                "failed" => c.failed = n,
                other => {
                    return Err(StoreError::Db(format!("unknown ledger state {other:?}")));
                }
            }
        }
        Ok(c)
    }

    fn ledger_failures(&self, date: NaiveDate) -> StoreResult<Vec<(String, String)>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT s.email, COALESCE(d.last_error, '')
                 FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id
                 WHERE d.issue_date = ?1 AND d.state = 'failed' ORDER BY d.subscriber_id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([day(date)], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        Ok(rows)
    }

    fn ledger_dates(&self) -> StoreResult<Vec<NaiveDate>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT issue_date FROM deliveries ORDER BY issue_date DESC")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                let s: String = r.get(0)?;
                parse_day(&s, 0)
            })
            .map_err(db)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db)?;
        Ok(rows)
    }

    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        // Compare-and-set in one statement: take it if free, expired or already ours.
        let n = self
            .conn()
            .prepare_cached(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?4)
                 ON CONFLICT (name) DO UPDATE SET
                   holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at <= ?3",
            )
            .map_err(db)?
            .execute(params![
                name,
                holder,
                now.timestamp_millis(),
                until.timestamp_millis()
            ])
            .map_err(db)?;
        Ok(n == 1)
    }

    fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.conn()
            .prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
            .map_err(db)?
            .execute(params![name, holder])
            .map_err(db)?;
        Ok(())
    }

    fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        self.reader()
            .prepare_cached("SELECT holder FROM leases WHERE name = ?1")
            .map_err(db)?
            .query_row([name], |r| r.get(0))
            .optional()
            .map_err(db)
    }

    fn record_run(&self, run: &RunRecord) -> StoreResult<()> {
        self.conn()
            .prepare_cached(
                "INSERT INTO runs (issue_date, started_at, finished_at, status, sent, failed,
                                   retried, in_doubt, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?
            .execute(params![
                day(run.date),
                ts(run.started_at),
                ts(run.finished_at),
                run.status.as_str(),
                run.sent as i64,
                run.failed as i64,
                run.retried as i64,
                run.in_doubt as i64,
                run.message,
            ])
            .map_err(db)?;
        Ok(())
    }

    fn last_run(&self) -> StoreResult<Option<RunRecord>> {
        self.reader()
            .prepare_cached(
                "SELECT issue_date, started_at, finished_at, status, sent, failed, retried,
                        in_doubt, message
                 FROM runs ORDER BY finished_at DESC, id DESC LIMIT 1",
            )
            .map_err(db)?
            .query_row([], |r| {
                let d: String = r.get(0)?;
                let s: String = r.get(1)?;
                let f: String = r.get(2)?;
                Ok(RunRecord {
                    date: parse_day(&d, 0)?,
                    started_at: parse_time(&s, 1)?,
                    finished_at: parse_time(&f, 2)?,
                    status: RunStatus::parse(&r.get::<_, String>(3)?)
                        .map_err(|e| bad_column(3, e))?,
                    sent: r.get::<_, i64>(4)? as u64,
                    failed: r.get::<_, i64>(5)? as u64,
                    retried: r.get::<_, i64>(6)? as u64,
                    in_doubt: r.get::<_, i64>(7)? as u64,
                    message: r.get(8)?,
                })
            })
            .optional()
            .map_err(db)
    }

    fn ping(&self) -> StoreResult<()> {
        self.reader()
            .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
            .map_err(db)?;
        Ok(())
    }

    fn bounces(&self) -> Option<&dyn super::BounceStore> {
        Some(self)
    }

    fn issues(&self) -> Option<&dyn super::IssueStore> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::{active, date, email, Db};
    use std::sync::Arc;

    /// A fresh database file's path; the folder lives as long as the first item.
    fn db_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        (dir, path)
    }

    fn sub_of(s: &SqliteStore, addr: &str) -> Subscriber {
        s.subscriber_by_email(&email(addr)).unwrap().unwrap()
    }

    /// A database file of its own for one test of the store suite.
    struct File(tempfile::TempDir);

    impl Db for File {
        fn open(&self) -> Arc<dyn crate::store::Backend> {
            Arc::new(SqliteStore::open(&self.0.path().join("db/digestif.db")).unwrap())
        }
        fn text(&self, sql: &str) -> Option<String> {
            let c = Connection::open(self.0.path().join("db/digestif.db")).unwrap();
            c.query_row(sql, [], |r| r.get(0)).unwrap()
        }
    }

    fn fresh() -> Box<dyn Db> {
        Box::new(File(tempfile::tempdir().unwrap()))
    }

    crate::store_suite!(fresh);

    /// The newest schema version this binary knows.
    fn latest() -> i64 {
        MIGRATIONS.last().unwrap().0
    }

    #[test]
    fn a_migration_numbered_below_the_highest_applied_is_still_applied() {
        let mut c = Connection::open_in_memory().unwrap();
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
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name IN ('t80', 't90')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 2);
        let applied: i64 = c
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, list.len() as i64);
    }

    #[test]
    fn migrations_apply_once_and_reopening_keeps_the_data() {
        let (_dir, path) = db_path();
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), latest());
            s.upsert_subscriber(&active("a@example.com")).unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest());
        let applied: i64 = s
            .conn()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        assert!(s
            .subscriber_by_email(&email("a@example.com"))
            .unwrap()
            .is_some());
        let mode: String = s
            .conn()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let (_dir, path) = db_path();
        drop(SqliteStore::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute(
            "INSERT INTO schema_migrations VALUES (999, 'future', 'x')",
            [],
        )
        .unwrap();
        drop(c);
        let err = SqliteStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn a_version_1_database_is_migrated_merging_case_twins_and_keeping_old_links() {
        let (_d, path) = db_path();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].2).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
                   applied_at TEXT NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 'init', 'x');
                 INSERT INTO subscribers (id, email, email_key, status, created_at, updated_at)
                 VALUES (1, 'Reader1@example.com', 'Reader1@example.com', 'active', 'x', 'x'),
                        (2, 'reader1@example.com', 'reader1@example.com', 'unsubscribed', 'x', 'x'),
                        (3, 'Ann@example.com', 'Ann@example.com', 'active', 'x', 'x'),
                        (4, 'ann@example.com', 'ann@example.com', 'active', 'x', 'x'),
                        (5, 'solo@example.com', 'solo@example.com', 'active', 'x', 'x');
                 INSERT INTO deliveries (issue_date, subscriber_id, state, updated_at)
                 VALUES ('2026-03-02', 1, 'sent', 'x'), ('2026-03-02', 2, 'sent', 'x'),
                        ('2026-03-02', 3, 'sent', 'x'), ('2026-03-02', 4, 'sent', 'x'),
                        ('2026-03-02', 5, 'pending', 'x');
                 INSERT INTO signups (email_key, email, status, requested_at)
                 VALUES ('Pat@example.com', 'Pat@example.com', 'pending', '2026-11-27T08:00:00Z'),
                        ('pat@example.com', 'pat@example.com', 'pending', '2026-11-27T09:00:00Z');",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest());
        // Twins merged: the unsubscribed spelling wins, else the oldest row.
        let r = sub_of(&s, "READER1@example.com");
        assert_eq!((r.id, r.status), (2, SubscriberStatus::Unsubscribed));
        assert_eq!(sub_of(&s, "ANN@example.com").id, 3);
        let ids: Vec<i64> = s
            .subscribers_page(None, 0, 10)
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, vec![2, 3, 5]);
        // The ledger survived the rebuild (the merged-away rows' lines went with them).
        let c = s.ledger_counts(date()).unwrap();
        assert_eq!((c.sent, c.pending), (2, 1));
        // Rows from before the migration still answer to an old link; each has a key.
        assert_eq!(s.subscriber_by_legacy_id(5).unwrap().unwrap().id, 5);
        assert!(s.subscriber_by_legacy_id(4).unwrap().is_none());
        let solo = sub_of(&s, "solo@example.com");
        assert_eq!(
            s.subscriber_by_link_key(&solo.link_key)
                .unwrap()
                .unwrap()
                .id,
            5
        );
        // One sign-up per address, the latest.
        let p = s.take_signup(&email("PAT@example.com")).unwrap().unwrap();
        assert_eq!(p.subscriber.email.as_str(), "pat@example.com");
        assert!(s.take_signup(&email("Pat@example.com")).unwrap().is_none());
        // Ids go on from the highest, never back.
        s.upsert_subscriber(&active("new@example.com")).unwrap();
        assert_eq!(sub_of(&s, "new@example.com").id, 6);
    }

    #[test]
    fn an_in_memory_store_works_without_a_file() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.upsert_subscriber(&active("a@example.com")).unwrap();
        assert_eq!(s.ledger_enqueue(date(), None).unwrap(), 1);
    }
}
