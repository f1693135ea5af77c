//! SQLite side of [`BounceStore`]: the `bounce_events` table (migration 0003).

use std::str::FromStr;

use chrono::NaiveDate;
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{bad_column, day, db, parse_day, parse_time, ts, SqliteStore};
use crate::bounces::{Decision, EventKind, Rules};
use crate::domain::{SubscriberEmail, SubscriberStatus};
use crate::store::StoreResult;
use crate::store::{BounceCounts, BounceEvent, BounceRecorded, BounceStore, NewBounceEvent};

fn kind_of(s: &str, col: usize) -> rusqlite::Result<EventKind> {
    EventKind::parse(s).ok_or_else(|| bad_column(col, format!("unknown event kind {s:?}")))
}

impl BounceStore for SqliteStore {
    fn record_bounce(&self, ev: &NewBounceEvent, rules: &Rules) -> StoreResult<BounceRecorded> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM subscribers WHERE id = ?1",
                [ev.subscriber_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let Some(status) = status else {
            return Ok(BounceRecorded::UnknownSubscriber);
        };
        let status = SubscriberStatus::from_str(&status).map_err(|e| {
            crate::store::StoreError::Db(format!("subscriber {}: {e}", ev.subscriber_id))
        })?;
        let at = ts(ev.at);
        let inserted = tx
            .prepare_cached(
                "INSERT INTO bounce_events
                   (report_key, subscriber_id, issue_date, kind, status, diagnostic, source, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (report_key) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![
                ev.report_key,
                ev.subscriber_id,
                day(ev.issue),
                ev.kind.as_str(),
                ev.status,
                ev.diagnostic,
                ev.source,
                at,
            ])
            .map_err(db)?;
        if inserted == 0 {
            return Ok(BounceRecorded::Duplicate);
        }
        let since = ts(ev.at - rules.soft_window);
        let soft: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM bounce_events
                 WHERE subscriber_id = ?1 AND kind = 'soft_bounce'
                   AND received_at > ?2 AND received_at <= ?3",
                params![ev.subscriber_id, since, at],
                |r| r.get(0),
            )
            .map_err(db)?;
        let decision = rules.decide(ev.kind, status, u32::try_from(soft).unwrap_or(u32::MAX));
        let (new_status, reason) = match decision {
            Decision::NoChange => (None, ""),
            Decision::Bounce(reason) => (Some(SubscriberStatus::Bounced), reason),
            Decision::Unsubscribe(reason) => (Some(SubscriberStatus::Unsubscribed), reason),
        };
        if let Some(new_status) = new_status {
            tx.execute(
                "UPDATE subscribers SET status = ?2, status_reason = ?3, updated_at = ?4,
                   unsubscribed_at = CASE WHEN ?2 = 'unsubscribed' THEN ?4 ELSE unsubscribed_at END
                 WHERE id = ?1",
                params![ev.subscriber_id, new_status.as_str(), reason, at],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(BounceRecorded::Recorded(decision))
    }

    fn bounce_events(&self, subscriber_id: i64) -> StoreResult<Vec<BounceEvent>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT received_at, issue_date, kind, status, diagnostic, source
                 FROM bounce_events WHERE subscriber_id = ?1 ORDER BY received_at, id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([subscriber_id], |r| {
                Ok(BounceEvent {
                    at: parse_time(&r.get::<_, String>(0)?, 0)?,
                    issue: parse_day(&r.get::<_, String>(1)?, 1)?,
                    kind: kind_of(&r.get::<_, String>(2)?, 2)?,
                    status: r.get(3)?,
                    diagnostic: r.get(4)?,
                    source: r.get(5)?,
                })
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn bounce_counts(&self, date: NaiveDate) -> StoreResult<BounceCounts> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT kind, COUNT(DISTINCT subscriber_id) FROM bounce_events
                 WHERE issue_date = ?1 GROUP BY kind",
            )
            .map_err(db)?;
        let mut rows = stmt.query([day(date)]).map_err(db)?;
        let mut c = BounceCounts::default();
        while let Some(r) = rows.next().map_err(db)? {
            let kind = kind_of(&r.get::<_, String>(0).map_err(db)?, 0).map_err(db)?;
            let n = r.get::<_, i64>(1).map_err(db)? as u64;
            match kind {
                EventKind::HardBounce => c.hard_bounces = n,
                EventKind::SoftBounce => c.soft_bounces = n,
                EventKind::Complaint => c.complaints = n,
                EventKind::Delayed | EventKind::Delivered => {}
            }
        }
        Ok(c)
    }

    fn bounce_totals(&self) -> StoreResult<Vec<(EventKind, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT kind, COUNT(*) FROM bounce_events GROUP BY kind ORDER BY kind")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    kind_of(&r.get::<_, String>(0)?, 0)?,
                    r.get::<_, i64>(1)? as u64,
                ))
            })
            .map_err(db)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
    }

    fn sent_message(
        &self,
        message_id: &str,
        email: &SubscriberEmail,
    ) -> StoreResult<Option<(i64, NaiveDate)>> {
        let bare = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        if bare.is_empty() {
            return Ok(None);
        }
        let conn = self.conn();
        // Through the subscriber (email_key is unique, deliveries are indexed by
        // subscriber): a few rows per address, whatever the size of the ledger.
        let found = conn
            .prepare_cached(
                "SELECT d.subscriber_id, d.issue_date FROM subscribers s
             JOIN deliveries d ON d.subscriber_id = s.id
             WHERE s.email_key = ?1 AND d.message_id IN (?2, ?3)
             ORDER BY d.issue_date DESC LIMIT 1",
            )
            .map_err(db)?
            .query_row(params![email.key(), bare, format!("<{bare}>")], |r| {
                Ok((r.get(0)?, parse_day(&r.get::<_, String>(1)?, 1)?))
            })
            .optional()
            .map_err(db);
        found
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};

    use super::*;
    use crate::store::{NewSubscriber, Subscribers};

    fn store_with(n: usize) -> (SqliteStore, Vec<i64>) {
        let s = SqliteStore::open_in_memory().unwrap();
        let mut ids = Vec::new();
        for i in 1..=n {
            let email = SubscriberEmail::parse(&format!("r{i}@example.com")).unwrap();
            s.upsert_subscriber(&NewSubscriber {
                email: email.clone(),
                name: None,
                locale: None,
                categories: vec![],
                timezone: None,
                status: SubscriberStatus::Active,
            })
            .unwrap();
            ids.push(s.subscriber_by_email(&email).unwrap().unwrap().id);
        }
        (s, ids)
    }

    fn event(key: &str, id: i64, kind: EventKind, days: i64) -> NewBounceEvent {
        NewBounceEvent {
            report_key: key.into(),
            subscriber_id: id,
            issue: NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
            kind,
            status: Some("4.2.2".into()),
            diagnostic: Some("452 4.2.2 Mailbox full".into()),
            source: "test".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).unwrap() + Duration::days(days),
        }
    }

    fn status(s: &SqliteStore, id: i64) -> SubscriberStatus {
        s.subscriber_by_id(id).unwrap().unwrap().status
    }

    #[test]
    fn the_same_report_read_twice_counts_once() {
        let (s, ids) = store_with(1);
        let rules = Rules::default();
        let ev = event("mid:a@x", ids[0], EventKind::SoftBounce, 0);
        assert_eq!(
            s.record_bounce(&ev, &rules).unwrap(),
            BounceRecorded::Recorded(Decision::NoChange)
        );
        for _ in 0..5 {
            assert_eq!(
                s.record_bounce(&ev, &rules).unwrap(),
                BounceRecorded::Duplicate
            );
        }
        assert_eq!(s.bounce_events(ids[0]).unwrap().len(), 1);
        assert_eq!(status(&s, ids[0]), SubscriberStatus::Active);
    }

    #[test]
    fn soft_bounces_bounce_at_the_limit_within_the_window_only() {
        let (s, ids) = store_with(2);
        let rules = Rules {
            soft_limit: 3,
            soft_window: Duration::days(15),
        };
        // Subscriber 1: three within 15 days → bounced at the third.
        for (n, day) in [(1, 0), (2, 7)] {
            let ev = event(&format!("mid:{n}"), ids[0], EventKind::SoftBounce, day);
            assert_eq!(
                s.record_bounce(&ev, &rules).unwrap(),
                BounceRecorded::Recorded(Decision::NoChange)
            );
        }
        let third = event("mid:3", ids[0], EventKind::SoftBounce, 14);
        assert_eq!(
            s.record_bounce(&third, &rules).unwrap(),
            BounceRecorded::Recorded(Decision::Bounce(crate::bounces::rules::REASON_SOFT))
        );
        assert_eq!(status(&s, ids[0]), SubscriberStatus::Bounced);
        // Subscriber 2: the first fell out of the window when the third came.
        for (n, day) in [(4, 0), (5, 10), (6, 15)] {
            let ev = event(&format!("mid:{n}"), ids[1], EventKind::SoftBounce, day);
            assert_eq!(
                s.record_bounce(&ev, &rules).unwrap(),
                BounceRecorded::Recorded(Decision::NoChange)
            );
        }
        assert_eq!(status(&s, ids[1]), SubscriberStatus::Active);
    }

    #[test]
    fn a_hard_bounce_bounces_and_a_complaint_unsubscribes_with_its_reason() {
        let (s, ids) = store_with(2);
        let rules = Rules::default();
        s.record_bounce(&event("mid:h", ids[0], EventKind::HardBounce, 0), &rules)
            .unwrap();
        assert_eq!(status(&s, ids[0]), SubscriberStatus::Bounced);
        s.record_bounce(&event("mid:c", ids[1], EventKind::Complaint, 0), &rules)
            .unwrap();
        assert_eq!(status(&s, ids[1]), SubscriberStatus::Unsubscribed);
        let reason: String = s
            .conn()
            .query_row(
                "SELECT status_reason FROM subscribers WHERE id = ?1",
                [ids[1]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(reason, "complaint");
        let c = s
            .bounce_counts(NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())
            .unwrap();
        assert_eq!(
            c,
            BounceCounts {
                hard_bounces: 1,
                soft_bounces: 0,
                complaints: 1
            }
        );
        assert_eq!(
            s.bounce_totals().unwrap(),
            vec![(EventKind::Complaint, 1), (EventKind::HardBounce, 1)]
        );
    }

    #[test]
    fn an_unknown_subscriber_keeps_nothing() {
        let (s, _) = store_with(0);
        assert_eq!(
            s.record_bounce(
                &event("mid:u", 99, EventKind::HardBounce, 0),
                &Rules::default()
            )
            .unwrap(),
            BounceRecorded::UnknownSubscriber
        );
        assert!(s.bounce_totals().unwrap().is_empty());
    }
}
