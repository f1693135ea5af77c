//! The delivery ledger on SQLite: enqueue, claims and marks, outcomes, the
//! senders of an issue (heartbeats, takeovers), and what past sends left.

use super::*;

impl SqliteStore {
    /// Deletes a reader's row of the ledger (a reader no longer active: the
    /// issue will not be sent to them).
    fn drop_row(tx: &Connection, date: &str, subscriber: i64) -> rusqlite::Result<()> {
        tx.prepare_cached("DELETE FROM deliveries WHERE issue_date = ?1 AND subscriber_id = ?2")?
            .execute(params![date, subscriber])?;
        Ok(())
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
                    Self::drop_row(tx, date, subscriber.id)?;
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
        conn.prepare_cached(&Self::rows_after_sql())?
            .query_map(params![date, state.as_str(), want, after], |r| {
                Ok((r.get(0)?, subscriber_from_row(r, 1)?))
            })?
            .collect()
    }

    /// The query of [`SqliteStore::rows_after`]: ?1 date, ?2 state, ?3 limit, ?4 after.
    fn rows_after_sql() -> String {
        // INDEXED BY: without statistics SQLite walks the primary key from the
        // first subscriber and skips every row already sent, which makes each
        // claim O(rows sent so far) and a whole send quadratic.
        format!(
            "SELECT d.attempts, {SUB_COLS}
             FROM deliveries d INDEXED BY deliveries_by_state
             JOIN subscribers s ON s.id = d.subscriber_id
             WHERE d.issue_date = ?1 AND d.state = ?2 AND d.subscriber_id > ?4
             ORDER BY d.subscriber_id LIMIT ?3"
        )
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

impl Ledger for SqliteStore {
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
                    Self::drop_row(&tx, &d, subscriber.id).map_err(db)?;
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
                Self::drop_row(&tx, &d, subscriber.id).map_err(db)?;
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
}

impl LedgerHistory for SqliteStore {
    fn ledger_by_sender(&self, date: NaiveDate) -> StoreResult<Vec<SenderRows>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT holder, SUM(state = 'pending'), SUM(state = 'sending'),
                        SUM(state = 'sent'), SUM(state = 'failed')
                 FROM deliveries WHERE issue_date = ?1 AND holder IS NOT NULL
                 GROUP BY holder ORDER BY holder",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([day(date)], |r| {
                let n = |i| r.get::<_, i64>(i).map(|n| n as u64);
                Ok(SenderRows {
                    holder: Holder::new(r.get::<_, String>(0)?),
                    rows: LedgerCounts {
                        pending: n(1)?,
                        sending: n(2)?,
                        sent: n(3)?,
                        failed: n(4)?,
                    },
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<_>>().map_err(db)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite::date;

    /// The lines of `EXPLAIN QUERY PLAN` for `sql` with `args`.
    fn plan_of(s: &SqliteStore, sql: &str, args: impl rusqlite::Params) -> Vec<String> {
        s.conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(args, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_claim_walks_the_deliveries_by_state_index_in_subscriber_order_whatever_the_statistics() {
        let s = SqliteStore::open_in_memory().unwrap();
        // Statistics that make the primary key look the better path (every row
        // of a date in one state): the claim must not take it.
        s.conn()
            .execute_batch(
                "ANALYZE;
                 DELETE FROM sqlite_stat1 WHERE tbl = 'deliveries';
                 INSERT INTO sqlite_stat1 VALUES
                   ('deliveries', 'deliveries', '1000000 1000000 1'),
                   ('deliveries', 'deliveries_by_state', '1000000 1000000 1000000 1');
                 ANALYZE sqlite_schema;",
            )
            .unwrap();
        let plan = plan_of(
            &s,
            &SqliteStore::rows_after_sql(),
            params![day(date()), "pending", 100, 0],
        );
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH d USING") && l.contains("deliveries_by_state")),
            "{plan:?}"
        );
        assert!(
            !plan.iter().any(|l| l.contains("TEMP B-TREE")),
            "the claim sorts its rows instead of reading them in index order: {plan:?}"
        );
    }
}
