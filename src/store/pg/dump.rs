//! PostgreSQL side of `store copy`: every table read and written as it is.

use super::{db, off_runtime, PgStore};
use crate::store::copy::{
    BounceRow, Copyable, DeliveryRow, Dump, RunRow, SignupRow, SubscriberRow, SuppressionRow,
};
use crate::store::StoreResult;

impl Copyable for PgStore {
    fn dump(&self) -> StoreResult<Dump> {
        off_runtime(|| {
            let mut c = self.conn()?;
            // One snapshot of every table.
            let mut tx = c
                .client
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(db)?;
            let mut all = |sql: &str| tx.query(sql, &[]).map_err(db);
            let suppression_key: String =
                all("SELECT value FROM settings WHERE name = 'suppression_key'")?
                    .first()
                    .map(|r| r.get(0))
                    .unwrap_or_default();
            let subscribers = all(
                "SELECT id, email, email_key, link_key, legacy_links, name, locale, categories,
                        timezone, status, status_reason, created_at, updated_at, unsubscribed_at
                 FROM subscribers ORDER BY id",
            )?
            .iter()
            .map(|r| SubscriberRow {
                id: r.get(0),
                email: r.get(1),
                email_key: r.get(2),
                link_key: r.get(3),
                legacy_links: r.get(4),
                name: r.get(5),
                locale: r.get(6),
                categories: r.get(7),
                timezone: r.get(8),
                status: r.get(9),
                status_reason: r.get(10),
                created_at: r.get(11),
                updated_at: r.get(12),
                unsubscribed_at: r.get(13),
            })
            .collect();
            let signups = all(
                "SELECT email_key, email, name, locale, categories, timezone, status, requested_at,
                        mailed_at
                 FROM signups ORDER BY email_key COLLATE \"C\"",
            )?
            .iter()
            .map(|r| SignupRow {
                email_key: r.get(0),
                email: r.get(1),
                name: r.get(2),
                locale: r.get(3),
                categories: r.get(4),
                timezone: r.get(5),
                status: r.get(6),
                requested_at: r.get(7),
                mailed_at: r.get(8),
            })
            .collect();
            let suppressions = all("SELECT address_hash, reason, created_at FROM suppressions
                 ORDER BY address_hash COLLATE \"C\"")?
            .iter()
            .map(|r| SuppressionRow {
                address_hash: r.get(0),
                reason: r.get(1),
                created_at: r.get(2),
            })
            .collect();
            let deliveries = all(
                "SELECT issue_date, subscriber_id, state, attempts, last_error, message_id,
                        updated_at
                 FROM deliveries ORDER BY issue_date, subscriber_id",
            )?
            .iter()
            .map(|r| DeliveryRow {
                issue_date: r.get(0),
                subscriber_id: r.get(1),
                state: r.get(2),
                attempts: i64::from(r.get::<_, i32>(3)),
                last_error: r.get(4),
                message_id: r.get(5),
                updated_at: r.get(6),
            })
            .collect();
            let runs = all(
                "SELECT id, issue_date, started_at, finished_at, status, sent, failed, retried,
                        in_doubt, message
                 FROM runs ORDER BY id",
            )?
            .iter()
            .map(|r| RunRow {
                id: r.get(0),
                issue_date: r.get(1),
                started_at: r.get(2),
                finished_at: r.get(3),
                status: r.get(4),
                sent: r.get(5),
                failed: r.get(6),
                retried: r.get(7),
                in_doubt: r.get(8),
                message: r.get(9),
            })
            .collect();
            let bounce_events = all(
                "SELECT id, report_key, subscriber_id, issue_date, kind, status, diagnostic,
                        source, received_at
                 FROM bounce_events ORDER BY id",
            )?
            .iter()
            .map(|r| BounceRow {
                id: r.get(0),
                report_key: r.get(1),
                subscriber_id: r.get(2),
                issue_date: r.get(3),
                kind: r.get(4),
                status: r.get(5),
                diagnostic: r.get(6),
                source: r.get(7),
                received_at: r.get(8),
            })
            .collect();
            let (issues, issue_variants) = super::issues::dump_in(&mut tx).map_err(db)?;
            tx.commit().map_err(db)?;
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
        })
    }

    fn is_empty(&self) -> StoreResult<bool> {
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT NOT EXISTS (SELECT 1 FROM subscribers)
                       AND NOT EXISTS (SELECT 1 FROM signups)
                       AND NOT EXISTS (SELECT 1 FROM suppressions)
                       AND NOT EXISTS (SELECT 1 FROM deliveries)
                       AND NOT EXISTS (SELECT 1 FROM runs)
                       AND NOT EXISTS (SELECT 1 FROM bounce_events)
                       AND NOT EXISTS (SELECT 1 FROM issues)",
                    &[],
                )?
                .first()
                .map(|r| r.get(0))
                .unwrap_or(false))
        })
    }

    fn load(&self, d: &Dump) -> StoreResult<()> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            tx.execute(
                "UPDATE settings SET value = $1 WHERE name = 'suppression_key'",
                &[&d.suppression_key],
            )
            .map_err(db)?;
            let st = tx
                .prepare(
                    "INSERT INTO subscribers (id, email, email_key, link_key, legacy_links, name,
                       locale, categories, timezone, status, status_reason, created_at,
                       updated_at, unsubscribed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .map_err(db)?;
            for s in &d.subscribers {
                tx.execute(
                    &st,
                    &[
                        &s.id,
                        &s.email,
                        &s.email_key,
                        &s.link_key,
                        &s.legacy_links,
                        &s.name,
                        &s.locale,
                        &s.categories,
                        &s.timezone,
                        &s.status,
                        &s.status_reason,
                        &s.created_at,
                        &s.updated_at,
                        &s.unsubscribed_at,
                    ],
                )
                .map_err(db)?;
            }
            let st = tx
                .prepare(
                    "INSERT INTO signups (email_key, email, name, locale, categories, timezone,
                       status, requested_at, mailed_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .map_err(db)?;
            for s in &d.signups {
                tx.execute(
                    &st,
                    &[
                        &s.email_key,
                        &s.email,
                        &s.name,
                        &s.locale,
                        &s.categories,
                        &s.timezone,
                        &s.status,
                        &s.requested_at,
                        &s.mailed_at,
                    ],
                )
                .map_err(db)?;
            }
            let st = tx
                .prepare(
                    "INSERT INTO suppressions (address_hash, reason, created_at)
                     VALUES ($1, $2, $3)",
                )
                .map_err(db)?;
            for s in &d.suppressions {
                tx.execute(&st, &[&s.address_hash, &s.reason, &s.created_at])
                    .map_err(db)?;
            }
            let st = tx
                .prepare(
                    "INSERT INTO deliveries (issue_date, subscriber_id, state, attempts,
                       last_error, message_id, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .map_err(db)?;
            for r in &d.deliveries {
                let attempts = i32::try_from(r.attempts).unwrap_or(i32::MAX);
                tx.execute(
                    &st,
                    &[
                        &r.issue_date,
                        &r.subscriber_id,
                        &r.state,
                        &attempts,
                        &r.last_error,
                        &r.message_id,
                        &r.updated_at,
                    ],
                )
                .map_err(db)?;
            }
            let st = tx
                .prepare(
                    "INSERT INTO runs (id, issue_date, started_at, finished_at, status, sent,
                       failed, retried, in_doubt, message)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .map_err(db)?;
            for r in &d.runs {
                tx.execute(
                    &st,
                    &[
                        &r.id,
                        &r.issue_date,
                        &r.started_at,
                        &r.finished_at,
                        &r.status,
                        &r.sent,
                        &r.failed,
                        &r.retried,
                        &r.in_doubt,
                        &r.message,
                    ],
                )
                .map_err(db)?;
            }
            let st = tx
                .prepare(
                    "INSERT INTO bounce_events (id, report_key, subscriber_id, issue_date, kind,
                       status, diagnostic, source, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .map_err(db)?;
            for b in &d.bounce_events {
                tx.execute(
                    &st,
                    &[
                        &b.id,
                        &b.report_key,
                        &b.subscriber_id,
                        &b.issue_date,
                        &b.kind,
                        &b.status,
                        &b.diagnostic,
                        &b.source,
                        &b.received_at,
                    ],
                )
                .map_err(db)?;
            }
            super::issues::load_in(&mut tx, &d.issues, &d.issue_variants).map_err(db)?;
            // Ids given from now on go on after the highest copied.
            tx.batch_execute(
                "SELECT setval(pg_get_serial_sequence('subscribers', 'id'),
                               COALESCE((SELECT MAX(id) FROM subscribers), 0) + 1, false);
                 SELECT setval(pg_get_serial_sequence('runs', 'id'),
                               COALESCE((SELECT MAX(id) FROM runs), 0) + 1, false);
                 SELECT setval(pg_get_serial_sequence('bounce_events', 'id'),
                               COALESCE((SELECT MAX(id) FROM bounce_events), 0) + 1, false);",
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
    }
}
