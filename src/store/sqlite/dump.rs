//! SQLite side of `store copy`: every table read and written as it is.

use rusqlite::{params, Row};

use super::{db, parse_day, parse_time, ts, SqliteStore};
use crate::store::copy::{
    BounceRow, Copyable, DeliveryRow, Dump, RunRow, SignupRow, SubscriberRow, SuppressionRow,
};
use crate::store::StoreResult;

fn time_at(r: &Row<'_>, i: usize) -> rusqlite::Result<chrono::DateTime<chrono::Utc>> {
    parse_time(&r.get::<_, String>(i)?, i)
}

fn time_or_null(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<chrono::DateTime<chrono::Utc>>> {
    r.get::<_, Option<String>>(i)?
        .map(|s| parse_time(&s, i))
        .transpose()
}

fn day_at(r: &Row<'_>, i: usize) -> rusqlite::Result<chrono::NaiveDate> {
    parse_day(&r.get::<_, String>(i)?, i)
}

impl Copyable for SqliteStore {
    fn dump(&self) -> StoreResult<Dump> {
        let mut conn = self.conn();
        // One snapshot of every table.
        let tx = conn.transaction().map_err(db)?;
        let all = |sql: &str| -> rusqlite::Result<rusqlite::Statement<'_>> { tx.prepare(sql) };
        let suppression_key: String = tx
            .query_row(
                "SELECT value FROM settings WHERE name = 'suppression_key'",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        let subscribers = all(
            "SELECT id, email, email_key, link_key, legacy_links, name, locale, categories,
                    timezone, status, status_reason, created_at, updated_at, unsubscribed_at
             FROM subscribers ORDER BY id",
        )
        .map_err(db)?
        .query_map([], |r| {
            Ok(SubscriberRow {
                id: r.get(0)?,
                email: r.get(1)?,
                email_key: r.get(2)?,
                link_key: r.get(3)?,
                legacy_links: r.get::<_, i64>(4)? != 0,
                name: r.get(5)?,
                locale: r.get(6)?,
                categories: r.get(7)?,
                timezone: r.get(8)?,
                status: r.get(9)?,
                status_reason: r.get(10)?,
                created_at: time_at(r, 11)?,
                updated_at: time_at(r, 12)?,
                unsubscribed_at: time_or_null(r, 13)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
        let signups = all(
            "SELECT email_key, email, name, locale, categories, timezone, status, requested_at,
                    mailed_at
             FROM signups ORDER BY email_key",
        )
        .map_err(db)?
        .query_map([], |r| {
            Ok(SignupRow {
                email_key: r.get(0)?,
                email: r.get(1)?,
                name: r.get(2)?,
                locale: r.get(3)?,
                categories: r.get(4)?,
                timezone: r.get(5)?,
                status: r.get(6)?,
                requested_at: time_at(r, 7)?,
                mailed_at: time_or_null(r, 8)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
        let suppressions =
            all("SELECT address_hash, reason, created_at FROM suppressions ORDER BY address_hash")
                .map_err(db)?
                .query_map([], |r| {
                    Ok(SuppressionRow {
                        address_hash: r.get(0)?,
                        reason: r.get(1)?,
                        created_at: time_at(r, 2)?,
                    })
                })
                .map_err(db)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?;
        let deliveries = all(
            "SELECT issue_date, subscriber_id, state, attempts, last_error, message_id, updated_at
             FROM deliveries ORDER BY issue_date, subscriber_id",
        )
        .map_err(db)?
        .query_map([], |r| {
            Ok(DeliveryRow {
                issue_date: day_at(r, 0)?,
                subscriber_id: r.get(1)?,
                state: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                message_id: r.get(5)?,
                updated_at: time_at(r, 6)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
        let runs = all(
            "SELECT id, issue_date, started_at, finished_at, status, sent, failed, retried,
                    in_doubt, message
             FROM runs ORDER BY id",
        )
        .map_err(db)?
        .query_map([], |r| {
            Ok(RunRow {
                id: r.get(0)?,
                issue_date: day_at(r, 1)?,
                started_at: time_at(r, 2)?,
                finished_at: time_at(r, 3)?,
                status: r.get(4)?,
                sent: r.get(5)?,
                failed: r.get(6)?,
                retried: r.get(7)?,
                in_doubt: r.get(8)?,
                message: r.get(9)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
        let bounce_events = all(
            "SELECT id, report_key, subscriber_id, issue_date, kind, status, diagnostic, source,
                    received_at
             FROM bounce_events ORDER BY id",
        )
        .map_err(db)?
        .query_map([], |r| {
            Ok(BounceRow {
                id: r.get(0)?,
                report_key: r.get(1)?,
                subscriber_id: r.get(2)?,
                issue_date: day_at(r, 3)?,
                kind: r.get(4)?,
                status: r.get(5)?,
                diagnostic: r.get(6)?,
                source: r.get(7)?,
                received_at: time_at(r, 8)?,
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
        let (issues, issue_variants) = super::issues::dump_in(&tx).map_err(db)?;
        Ok(Dump {
            suppression_key,
            subscribers,
            signups,
            suppressions,
            deliveries,
            runs,
            bounce_events,
            issues,
            issue_variants,
        })
    }

    fn is_empty(&self) -> StoreResult<bool> {
        self.conn()
            .query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM subscribers) AND NOT EXISTS (SELECT 1 FROM signups)
                   AND NOT EXISTS (SELECT 1 FROM suppressions) AND NOT EXISTS (SELECT 1 FROM deliveries)
                   AND NOT EXISTS (SELECT 1 FROM runs) AND NOT EXISTS (SELECT 1 FROM bounce_events)
                   AND NOT EXISTS (SELECT 1 FROM issues)",
                [],
                |r| r.get(0),
            )
            .map_err(db)
    }

    fn load(&self, d: &Dump) -> StoreResult<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let opt = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(ts);
        tx.execute(
            "UPDATE settings SET value = ?1 WHERE name = 'suppression_key'",
            [&d.suppression_key],
        )
        .map_err(db)?;
        let mut st = tx
            .prepare(
                "INSERT INTO subscribers (id, email, email_key, link_key, legacy_links, name, locale,
                   categories, timezone, status, status_reason, created_at, updated_at,
                   unsubscribed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .map_err(db)?;
        for s in &d.subscribers {
            st.execute(params![
                s.id,
                s.email,
                s.email_key,
                s.link_key,
                s.legacy_links,
                s.name,
                s.locale,
                s.categories,
                s.timezone,
                s.status,
                s.status_reason,
                ts(s.created_at),
                ts(s.updated_at),
                opt(&s.unsubscribed_at),
            ])
            .map_err(db)?;
        }
        drop(st);
        let mut st = tx
            .prepare(
                "INSERT INTO signups (email_key, email, name, locale, categories, timezone, status,
                   requested_at, mailed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?;
        for s in &d.signups {
            st.execute(params![
                s.email_key,
                s.email,
                s.name,
                s.locale,
                s.categories,
                s.timezone,
                s.status,
                ts(s.requested_at),
                opt(&s.mailed_at),
            ])
            .map_err(db)?;
        }
        drop(st);
        let mut st = tx
            .prepare(
                "INSERT INTO suppressions (address_hash, reason, created_at) VALUES (?1, ?2, ?3)",
            )
            .map_err(db)?;
        for s in &d.suppressions {
            st.execute(params![s.address_hash, s.reason, ts(s.created_at)])
                .map_err(db)?;
        }
        drop(st);
        let mut st = tx
            .prepare(
                "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts, last_error,
                   message_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(db)?;
        for r in &d.deliveries {
            st.execute(params![
                super::day(r.issue_date),
                r.subscriber_id,
                r.state,
                r.attempts,
                r.last_error,
                r.message_id,
                ts(r.updated_at),
            ])
            .map_err(db)?;
        }
        drop(st);
        let mut st = tx
            .prepare(
                "INSERT INTO runs (id, issue_date, started_at, finished_at, status, sent, failed,
                   retried, in_doubt, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(db)?;
        for r in &d.runs {
            st.execute(params![
                r.id,
                super::day(r.issue_date),
                ts(r.started_at),
                ts(r.finished_at),
                r.status,
                r.sent,
                r.failed,
                r.retried,
                r.in_doubt,
                r.message,
            ])
            .map_err(db)?;
        }
        drop(st);
        let mut st = tx
            .prepare(
                "INSERT INTO bounce_events (id, report_key, subscriber_id, issue_date, kind, status,
                   diagnostic, source, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?;
        for b in &d.bounce_events {
            st.execute(params![
                b.id,
                b.report_key,
                b.subscriber_id,
                super::day(b.issue_date),
                b.kind,
                b.status,
                b.diagnostic,
                b.source,
                ts(b.received_at),
            ])
            .map_err(db)?;
        }
        drop(st);
        super::issues::load_in(&tx, &d.issues, &d.issue_variants).map_err(db)?;
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::active;
    use crate::store::Subscribers;

    #[test]
    fn a_dump_carries_rows_as_stored_and_names_a_timestamp_it_cannot_read() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert!(s.is_empty().unwrap());
        let mut sub = active("Ana@Example.org");
        sub.categories = vec!["tech".into(), "world".into()];
        s.upsert_subscriber(&sub).unwrap();
        assert!(!s.is_empty().unwrap());
        let d = s.dump().unwrap();
        assert_eq!(d.subscribers.len(), 1);
        let row = &d.subscribers[0];
        assert_eq!(row.email, "Ana@example.org");
        assert_eq!(row.email_key, sub.email.key());
        assert_eq!(row.categories, "tech;world");
        assert_eq!(row.status, "active");
        assert!(!row.legacy_links);
        assert!(!d.suppression_key.is_empty());
        s.conn()
            .execute("UPDATE subscribers SET created_at = 'yesterday'", [])
            .unwrap();
        let err = s.dump().unwrap_err().to_string();
        assert!(err.contains("bad timestamp \"yesterday\""), "{err}");
    }
}
