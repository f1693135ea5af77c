//! `digestif store copy`: everything a database keeps, moved to another one
//! (SQLite to PostgreSQL, or back), rows as they are: ids, link keys, the
//! suppression key and its hashes, the ledger, runs, returned mail and the
//! frozen issues.

use chrono::{DateTime, NaiveDate, Utc};

use super::issues::{FrozenIssue, VariantRow};
use super::{Backend, StoreError, StoreResult};

/// One `subscribers` row, every column.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriberRow {
    pub id: i64,
    pub email: String,
    pub email_key: String,
    pub link_key: String,
    pub legacy_links: bool,
    pub name: Option<String>,
    pub locale: Option<String>,
    pub categories: String,
    pub timezone: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
}

/// One `signups` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SignupRow {
    pub email_key: String,
    pub email: String,
    pub name: Option<String>,
    pub locale: Option<String>,
    pub categories: String,
    pub timezone: Option<String>,
    pub status: String,
    pub requested_at: DateTime<Utc>,
    pub mailed_at: Option<DateTime<Utc>>,
}

/// One `suppressions` row: the keyed hash of an address, why, when.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressionRow {
    pub address_hash: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub issue_date: NaiveDate,
    pub subscriber_id: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub message_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One `runs` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub issue_date: NaiveDate,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub status: String,
    pub sent: i64,
    pub failed: i64,
    pub retried: i64,
    pub in_doubt: i64,
    pub message: String,
}

/// One `bounce_events` row.
#[derive(Debug, Clone, PartialEq)]
pub struct BounceRow {
    pub id: i64,
    pub report_key: String,
    pub subscriber_id: i64,
    pub issue_date: NaiveDate,
    pub kind: String,
    pub status: Option<String>,
    pub diagnostic: Option<String>,
    pub source: String,
    pub received_at: DateTime<Utc>,
}

/// Everything a database keeps but its leases (which belong to running
/// processes), each table in key order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dump {
    /// `settings.suppression_key`: the suppressions' hashes are keyed with it.
    pub suppression_key: String,
    pub subscribers: Vec<SubscriberRow>,
    pub signups: Vec<SignupRow>,
    pub suppressions: Vec<SuppressionRow>,
    pub deliveries: Vec<DeliveryRow>,
    pub runs: Vec<RunRow>,
    pub bounce_events: Vec<BounceRow>,
    /// The frozen issues, by date, and their variants.
    pub issues: Vec<FrozenIssue>,
    pub issue_variants: Vec<VariantRow>,
}

impl Dump {
    /// Rows by table, for the command's report.
    pub fn counts(&self) -> [(&'static str, usize); 8] {
        [
            ("subscribers", self.subscribers.len()),
            ("sign-ups", self.signups.len()),
            ("suppressions", self.suppressions.len()),
            ("ledger rows", self.deliveries.len()),
            ("runs", self.runs.len()),
            ("bounce events", self.bounce_events.len()),
            ("issues", self.issues.len()),
            ("issue variants", self.issue_variants.len()),
        ]
    }
}

/// Reading and writing a whole database, for [`copy`].
pub trait Copyable {
    /// Every row, each table in key order.
    fn dump(&self) -> StoreResult<Dump>;
    /// Whether the database keeps no subscriber, sign-up, suppression, ledger
    /// row, run, bounce event or issue.
    fn is_empty(&self) -> StoreResult<bool>;
    /// Writes `dump` into this empty database in one transaction, ids kept
    /// (and the id sequences moved past them), the suppression key replaced.
    fn load(&self, dump: &Dump) -> StoreResult<()>;
}

/// Copies everything `from` keeps into `to`, which must be empty; what was copied.
pub fn copy(from: &dyn Backend, to: &dyn Backend) -> StoreResult<Dump> {
    if !to.is_empty()? {
        return Err(StoreError::TargetNotEmpty);
    }
    let dump = from.dump()?;
    to.load(&dump)?;
    Ok(dump)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::bounces::{EventKind, Rules};
    use crate::domain::SubscriberStatus;
    use crate::store::suite::{active, add_many, at, date, email, new_sub};
    use crate::store::{
        DeliveryOutcome, NewBounceEvent, NewSubscriber, PendingSignup, PgStore, RunRecord,
        RunStatus, SqliteStore, Upserted,
    };

    /// A SQLite database with a bit of everything.
    fn filled(s: &Arc<dyn Backend>) {
        add_many(s, 6);
        s.upsert_subscriber(&NewSubscriber {
            name: Some("Zoé".into()),
            categories: vec!["Monde".into(), "Sport".into()],
            timezone: Some(chrono_tz::Europe::Paris),
            ..active("Zoe@Example.com")
        })
        .unwrap();
        s.upsert_subscriber(&new_sub("gone@example.com", SubscriberStatus::Unsubscribed))
            .unwrap();
        assert!(s.remove_subscriber(&email("gone@example.com")).unwrap());
        s.put_signup(&PendingSignup {
            subscriber: new_sub("new@example.com", SubscriberStatus::Pending),
            requested_at: at(9, 0),
        })
        .unwrap();
        s.ledger_enqueue(date(), None).unwrap();
        let c = s.ledger_claim(date(), 3, false).unwrap();
        s.ledger_record(
            date(),
            &[
                (
                    c[0].subscriber.id,
                    DeliveryOutcome::Sent {
                        message_id: "<1@x>".into(),
                    },
                ),
                (
                    c[1].subscriber.id,
                    DeliveryOutcome::Failed {
                        error: "550 no".into(),
                        hard_bounce: true,
                    },
                ),
            ],
            at(7, 1),
        )
        .unwrap();
        s.record_run(&RunRecord {
            date: date(),
            started_at: at(7, 0),
            finished_at: at(7, 3),
            status: RunStatus::Ok,
            sent: 1,
            failed: 1,
            retried: 0,
            in_doubt: 1,
            message: "done".into(),
        })
        .unwrap();
        s.bounces()
            .record_bounce(
                &NewBounceEvent {
                    report_key: "mid:a@x".into(),
                    subscriber_id: c[0].subscriber.id,
                    issue: date(),
                    kind: EventKind::SoftBounce,
                    status: Some("4.2.2".into()),
                    diagnostic: Some("452 full".into()),
                    source: "test".into(),
                    at: Utc.with_ymd_and_hms(2026, 3, 3, 8, 0, 0).unwrap(),
                },
                &Rules::default(),
            )
            .unwrap();
        let issues = s.issues();
        issues
            .freeze_issue(
                &FrozenIssue {
                    date: date(),
                    digest: "{\"stories\": []}".into(),
                    html: "<p>L’Essentiel</p>".into(),
                    text: "L’Essentiel\n".into(),
                    frozen_at: at(6, 0),
                },
                crate::store::Freeze::KeepFirst,
            )
            .unwrap();
        issues.freeze_variant(date(), "fr:", "{}").unwrap();
        issues
            .freeze_variant(date(), "en:Sport;Monde", "{}")
            .unwrap();
    }

    #[test]
    fn sqlite_to_postgresql_and_back_keeps_every_row_and_refuses_a_non_empty_target() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite: Arc<dyn Backend> =
            Arc::new(SqliteStore::open(&dir.path().join("a.db")).unwrap());
        filled(&sqlite);
        let url = crate::store::pg::test_cluster::fresh_database();
        let pg: Arc<dyn Backend> = Arc::new(PgStore::open(&url).unwrap());

        let copied = copy(&*sqlite, &*pg).unwrap();
        let original = sqlite.dump().unwrap();
        assert_eq!(copied, original);
        assert_eq!(original.subscribers.len(), 7);
        assert_eq!(original.suppressions.len(), 1);
        assert_eq!(original.runs.len(), 1);
        assert_eq!(original.bounce_events.len(), 1);
        assert_eq!(original.issues.len(), 1);
        assert_eq!(original.issue_variants.len(), 2);
        assert_eq!(
            pg.dump().unwrap(),
            original,
            "row by row, PostgreSQL = SQLite"
        );

        // A second copy into it is refused and changes nothing.
        let err = copy(&*sqlite, &*pg).unwrap_err();
        assert!(matches!(err, StoreError::TargetNotEmpty), "{err}");
        let err = err.to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(pg.dump().unwrap(), original);

        // And back into a new SQLite file: the same rows again.
        let back: Arc<dyn Backend> = Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        copy(&*pg, &*back).unwrap();
        let mut want = original.clone();
        assert_eq!(back.dump().unwrap(), want);
        want.subscribers.pop();
        assert_ne!(back.dump().unwrap(), want, "the comparison sees rows");

        // The copy works as the original: the suppression still holds (its key
        // came along), ids go on after the highest.
        let pg: Arc<dyn Backend> = Arc::new(PgStore::open(&url).unwrap());
        assert_eq!(
            pg.upsert_subscriber(&active("GONE@example.com")).unwrap(),
            Upserted::Suppressed
        );
        pg.upsert_subscriber(&active("later@example.com")).unwrap();
        let later = pg
            .subscriber_by_email(&email("later@example.com"))
            .unwrap()
            .unwrap();
        assert!(original.subscribers.iter().all(|s| s.id < later.id));
    }
}
