//! PostgreSQL side of [`BounceStore`]: the `bounce_events` table (migration 0003).

use std::str::FromStr;

use chrono::NaiveDate;

use super::{bad, db, off_runtime, PgStore};
use crate::bounces::{Decision, EventKind, Rules};
use crate::domain::{SubscriberEmail, SubscriberStatus};
use crate::store::StoreResult;
use crate::store::{BounceCounts, BounceEvent, BounceRecorded, BounceStore, NewBounceEvent};

fn kind_of(s: &str) -> StoreResult<EventKind> {
    EventKind::parse(s).ok_or_else(|| bad("event kind", format!("{s:?}")))
}

impl BounceStore for PgStore {
    fn record_bounce(&self, ev: &NewBounceEvent, rules: &Rules) -> StoreResult<BounceRecorded> {
        off_runtime(|| {
            let mut c = self.conn()?;
            let mut tx = c.client.transaction().map_err(db)?;
            let status: Option<String> = tx
                .query_opt(
                    "SELECT status FROM subscribers WHERE id = $1 FOR UPDATE",
                    &[&ev.subscriber_id],
                )
                .map_err(db)?
                .map(|r| r.get(0));
            let Some(status) = status else {
                return Ok(BounceRecorded::UnknownSubscriber);
            };
            let status = SubscriberStatus::from_str(&status).map_err(|e| bad("status", e))?;
            let inserted = tx
                .execute(
                    "INSERT INTO bounce_events
                       (report_key, subscriber_id, issue_date, kind, status, diagnostic, source, received_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (report_key) DO NOTHING",
                    &[
                        &ev.report_key,
                        &ev.subscriber_id,
                        &ev.issue,
                        &ev.kind.as_str(),
                        &ev.status,
                        &ev.diagnostic,
                        &ev.source,
                        &ev.at,
                    ],
                )
                .map_err(db)?;
            if inserted == 0 {
                return Ok(BounceRecorded::Duplicate);
            }
            let soft: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM bounce_events
                     WHERE subscriber_id = $1 AND kind = 'soft_bounce'
                       AND received_at > $2 AND received_at <= $3",
                    &[&ev.subscriber_id, &(ev.at - rules.soft_window), &ev.at],
                )
                .map_err(db)?
                .get(0);
            let decision = rules.decide(ev.kind, status, u32::try_from(soft).unwrap_or(u32::MAX));
            let (new_status, reason) = match decision {
                Decision::NoChange => (None, ""),
                Decision::Bounce(reason) => (Some(SubscriberStatus::Bounced), reason),
                Decision::Unsubscribe(reason) => (Some(SubscriberStatus::Unsubscribed), reason),
            };
            if let Some(new_status) = new_status {
                tx.execute(
                    "UPDATE subscribers SET status = $2, status_reason = $3, updated_at = $4,
                       unsubscribed_at = CASE WHEN $2 = 'unsubscribed' THEN $4 ELSE unsubscribed_at END
                     WHERE id = $1",
                    &[&ev.subscriber_id, &new_status.as_str(), &reason, &ev.at],
                )
                .map_err(db)?;
            }
            tx.commit().map_err(db)?;
            Ok(BounceRecorded::Recorded(decision))
        })
    }

    fn bounce_events(&self, subscriber_id: i64) -> StoreResult<Vec<BounceEvent>> {
        off_runtime(|| {
            self.query(
                "SELECT received_at, issue_date, kind, status, diagnostic, source
                 FROM bounce_events WHERE subscriber_id = $1 ORDER BY received_at, id",
                &[&subscriber_id],
            )?
            .iter()
            .map(|r| {
                Ok(BounceEvent {
                    at: r.get(0),
                    issue: r.get(1),
                    kind: kind_of(r.get(2))?,
                    status: r.get(3),
                    diagnostic: r.get(4),
                    source: r.get(5),
                })
            })
            .collect()
        })
    }

    fn bounce_counts(&self, date: NaiveDate) -> StoreResult<BounceCounts> {
        off_runtime(|| {
            let mut c = BounceCounts::default();
            for r in self.query(
                "SELECT kind, COUNT(DISTINCT subscriber_id) FROM bounce_events
                 WHERE issue_date = $1 GROUP BY kind",
                &[&date],
            )? {
                let n = r.get::<_, i64>(1) as u64;
                match kind_of(r.get(0))? {
                    EventKind::HardBounce => c.hard_bounces = n,
                    EventKind::SoftBounce => c.soft_bounces = n,
                    EventKind::Complaint => c.complaints = n,
                    EventKind::Delayed | EventKind::Delivered => {}
                }
            }
            Ok(c)
        })
    }

    fn bounce_totals(&self) -> StoreResult<Vec<(EventKind, u64)>> {
        off_runtime(|| {
            self.query(
                "SELECT kind, COUNT(*) FROM bounce_events GROUP BY kind ORDER BY kind",
                &[],
            )?
            .iter()
            .map(|r| Ok((kind_of(r.get(0))?, r.get::<_, i64>(1) as u64)))
            .collect()
        })
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
        let bracketed = format!("<{bare}>");
        off_runtime(|| {
            Ok(self
                .query(
                    "SELECT d.subscriber_id, d.issue_date FROM subscribers s
                     JOIN deliveries d ON d.subscriber_id = s.id
                     WHERE s.email_key = $1 AND d.message_id IN ($2, $3)
                     ORDER BY d.issue_date DESC LIMIT 1",
                    &[&email.key(), &bare, &bracketed],
                )?
                .first()
                .map(|r| (r.get(0), r.get(1))))
        })
    }
}
