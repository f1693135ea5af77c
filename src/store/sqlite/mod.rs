//! SQLite backend of [`super::Store`]. All SQL lives in this folder: one file
//! per part of the store (`subscribers.rs`, `signups.rs`, `ledger.rs`,
//! `leases.rs`, `runs.rs`, `issues.rs`, `bounces.rs`, `dump.rs`); this one
//! opens the database, migrates it and holds the helpers they share.
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
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use super::{Access, Opening, Schema};
use super::{
    Delivery, DeliveryOutcome, DeliveryState, Holder, Leases, Ledger, LedgerCounts, LedgerHistory,
    NewSubscriber, PendingSignup, RunRecord, RunStatus, Runs, SenderRows, SenderSeen, Signups,
    StoreError, StoreResult, Subscribers, Suppression, SuppressionReason, TakeOver, Upserted,
};
use crate::config::Config;
use crate::domain::{LinkKey, Locale, Subscriber, SubscriberEmail, SubscriberStatus};

/// Schema migrations, applied in order, each recorded in `schema_migrations`.
/// Append only: never edit a migration that has shipped.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "identity",
        include_str!("../migrations/0002_identity.sql"),
    ),
    (
        3,
        "bounce_events",
        include_str!("../migrations/0003_bounce_events.sql"),
    ),
    (4, "senders", include_str!("../migrations/0004_senders.sql")),
    (5, "issues", include_str!("../migrations/0005_issues.sql")),
];

mod bounces;
mod dump;
mod issues;
mod leases;
mod ledger;
mod runs;
mod signups;
mod subscribers;

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

fn bad_column(
    i: usize,
    msg: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
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

/// The keyed hash under which a suppressed address is remembered: HMAC-SHA256 of
/// its normalised form, so that the table alone does not list the addresses.
pub(super) fn address_hash(key: &[u8], email: &SubscriberEmail) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(email.key().as_bytes());
    crate::config::hex(&m.finalize().into_bytes())
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
        let mut store = Self::setup(conn, true, Opening::Migrate)
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

    /// Opens the database file as it is, never migrating nor creating it:
    /// refused unless its schema is current. `Access::ReadOnly`: nothing can
    /// be written through it (`query_only`).
    pub fn open_current(path: &Path, access: Access) -> StoreResult<SqliteStore> {
        Self::schema_of(path)?.require_current()?;
        let flags = OpenFlags::default() - OpenFlags::SQLITE_OPEN_CREATE;
        let open = || {
            Connection::open_with_flags(path, flags)
                .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", path.display())))
        };
        let mut store = Self::setup(open()?, true, Opening::AsItIs(access))
            .map_err(|e| StoreError::Db(format!("database {}: {e}", path.display())))?;
        if access == Access::ReadOnly {
            store
                .conn()
                .execute_batch("PRAGMA query_only = ON")
                .map_err(db)?;
        }
        let read = open()?;
        read.busy_timeout(BUSY_TIMEOUT)
            .and_then(|_| read.execute_batch("PRAGMA query_only = ON; PRAGMA foreign_keys = ON;"))
            .map_err(db)?;
        store.read = Some(Mutex::new(read));
        Ok(store)
    }

    /// The schema of the database file, read without changing it (a file
    /// that is not there is not created).
    pub fn schema_of(path: &Path) -> StoreResult<Schema> {
        if !path.is_file() {
            return Ok(Schema::NoFile(path.to_path_buf()));
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        let read = || -> rusqlite::Result<Option<Vec<i64>>> {
            let table: Option<String> = conn
                .query_row(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            if table.is_none() {
                return Ok(None);
            }
            let mut st = conn.prepare("SELECT version FROM schema_migrations")?;
            let versions = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            Ok(Some(versions))
        };
        let applied =
            read().map_err(|e| StoreError::Db(format!("database {}: {e}", path.display())))?;
        Ok(Schema::of(
            applied.as_deref(),
            MIGRATIONS.iter().map(|m| (m.0, m.1)),
        ))
    }

    /// The schema version this binary brings a SQLite database to.
    pub fn latest_schema() -> i64 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    /// A private in-memory database (tests, `sqlite::memory:`).
    pub fn open_in_memory() -> StoreResult<SqliteStore> {
        Self::setup(
            Connection::open_in_memory().map_err(db)?,
            false,
            Opening::Migrate,
        )
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

    fn setup(mut conn: Connection, file: bool, opening: Opening) -> StoreResult<SqliteStore> {
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
        if opening == Opening::Migrate {
            migrate(&mut conn)?;
        }
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
    fn opened_as_it_is_a_database_is_never_migrated_nor_created_and_read_only_writes_nothing() {
        let (_dir, path) = db_path();
        assert_eq!(
            SqliteStore::schema_of(&path).unwrap(),
            Schema::NoFile(path.clone())
        );
        let err = SqliteStore::open_current(&path, Access::ReadWrite).unwrap_err();
        assert!(err.to_string().contains("run `digestif migrate`"), "{err}");
        assert!(!path.exists(), "a missing file was created");

        let mut c = Connection::open(&path).unwrap();
        migrate_with(&mut c, &MIGRATIONS[..MIGRATIONS.len() - 1]).unwrap();
        drop(c);
        let behind = SqliteStore::schema_of(&path).unwrap();
        assert!(matches!(behind, Schema::Behind { .. }), "{behind:?}");
        assert!(SqliteStore::open_current(&path, Access::ReadOnly).is_err());
        assert_eq!(SqliteStore::schema_of(&path).unwrap(), behind);

        drop(SqliteStore::open(&path).unwrap());
        let s = SqliteStore::open_current(&path, Access::ReadOnly).unwrap();
        assert_eq!(s.schema_version().unwrap(), latest());
        let err = s.upsert_subscriber(&active("a@example.com")).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        let s = SqliteStore::open_current(&path, Access::ReadWrite).unwrap();
        s.upsert_subscriber(&active("a@example.com")).unwrap();
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
    fn a_file_database_writes_in_wal_and_both_its_connections_wait_for_a_lock() {
        let (_dir, path) = db_path();
        let s = SqliteStore::open(&path).unwrap();
        let pragma = |c: &Connection, name: &str| -> String {
            c.query_row(&format!("PRAGMA {name}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
        };
        let waits = BUSY_TIMEOUT.as_millis().to_string();
        assert_eq!(pragma(&s.conn(), "journal_mode"), "wal");
        assert_eq!(pragma(&s.conn(), "busy_timeout"), waits);
        assert_eq!(pragma(&s.conn(), "foreign_keys"), "1");
        assert_eq!(pragma(&s.reader(), "busy_timeout"), waits);
        assert_eq!(pragma(&s.reader(), "query_only"), "1");
        assert_eq!(pragma(&s.reader(), "foreign_keys"), "1");
        s.set_busy_timeout(Duration::from_millis(250)).unwrap();
        assert_eq!(pragma(&s.conn(), "busy_timeout"), "250");
        assert_eq!(pragma(&s.reader(), "busy_timeout"), "250");
    }

    #[test]
    fn an_in_memory_store_works_without_a_file() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.upsert_subscriber(&active("a@example.com")).unwrap();
        assert_eq!(s.ledger_enqueue(date(), None).unwrap(), 1);
    }
}
