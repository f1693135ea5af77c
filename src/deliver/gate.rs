//! Which ledger rows a send may take, as data the send loop consults: the
//! service's send passes enqueue only the subscribers whose local send instant
//! has come ([`ZoneFilter`]), and take no new row once the service is stopping
//! (the stop flag). `digestif send` passes the open gate ([`Gate::default`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::store::{Delivery, DeliveryOutcome, Holder, Ledger, StoreResult, TakeOver};

/// The subscribers a send pass enqueues for the issue of `date`: those whose
/// own time zone (IANA name) is in `zones`, and those without one when
/// `with_unzoned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFilter {
    pub date: NaiveDate,
    pub zones: Vec<String>,
    pub with_unzoned: bool,
}

/// What a send may take from the ledger.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// Only these subscribers are enqueued; `None`: every active subscriber.
    pub zones: Option<ZoneFilter>,
    /// Once set (the service is stopping), no new row is claimed: the send loop
    /// finishes the messages in flight and ends, the rest stays pending.
    pub stop: Arc<AtomicBool>,
}

impl Gate {
    /// Whether the service is stopping: no new row from now on.
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Adds the pending rows of `date`: for the subscribers of the zone filter
    /// if it is this date's, else for every active subscriber.
    pub fn enqueue(&self, ledger: &dyn Ledger, date: NaiveDate) -> StoreResult<u64> {
        match &self.zones {
            Some(f) if f.date == date => {
                ledger.ledger_enqueue_in_zones(date, &f.zones, f.with_unzoned)
            }
            _ => ledger.ledger_enqueue(date, None),
        }
    }

    /// [`Ledger::ledger_claim_for`]; once stopping, no row is claimed.
    pub fn claim_for(
        &self,
        ledger: &dyn Ledger,
        date: NaiveDate,
        holder: &Holder,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        if self.is_stopping() {
            return Ok(Vec::new());
        }
        ledger.ledger_claim_for(date, holder, limit)
    }

    /// [`Ledger::ledger_next`]; once stopping, no row is read ahead.
    pub fn next(
        &self,
        ledger: &dyn Ledger,
        date: NaiveDate,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        if self.is_stopping() {
            return Ok(Vec::new());
        }
        ledger.ledger_next(date, after, limit)
    }

    /// [`Ledger::ledger_record_and_mark`], one store hop per batch; once
    /// stopping, the outcomes are still recorded but no row is marked: the
    /// messages staged for them are dropped before their end, undelivered, and
    /// stay pending.
    pub fn record_and_mark(
        &self,
        ledger: &dyn Ledger,
        date: NaiveDate,
        holder: &Holder,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if self.is_stopping() {
            if !outcomes.is_empty() {
                ledger.ledger_record(date, outcomes, at)?;
            }
            return Ok(vec![false; marks.len()]);
        }
        ledger.ledger_record_and_mark(date, holder, outcomes, marks, at)
    }

    /// [`Ledger::ledger_take_over`]; once stopping, nothing is taken over and
    /// nobody else is waited for.
    pub fn take_over(
        &self,
        ledger: &dyn Ledger,
        date: NaiveDate,
        holder: &Holder,
        gone: &[Holder],
        now: DateTime<Utc>,
    ) -> StoreResult<TakeOver> {
        if self.is_stopping() {
            return Ok(TakeOver::default());
        }
        ledger.ledger_take_over(date, holder, gone, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{SubscriberEmail, SubscriberStatus};
    use crate::schedule::Plan;
    use crate::store::{LedgerCounts, NewSubscriber, SqliteStore, Store};
    use chrono::{Duration, NaiveTime};
    use chrono_tz::{America, Europe};

    fn sub(email: &str, tz: Option<chrono_tz::Tz>) -> NewSubscriber {
        NewSubscriber {
            email: SubscriberEmail::parse(email).unwrap(),
            name: None,
            locale: None,
            categories: vec![],
            timezone: tz,
            status: SubscriberStatus::Active,
        }
    }

    #[test]
    fn a_pass_enqueues_only_the_subscribers_whose_morning_has_come() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        store
            .upsert_subscriber(&sub("paris@example.org", None))
            .unwrap();
        store
            .upsert_subscriber(&sub("ny@example.org", Some(America::New_York)))
            .unwrap();
        store
            .upsert_subscriber(&sub("berlin@example.org", Some(Europe::Berlin)))
            .unwrap();
        let plan = Plan {
            send_time: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            timezone: Europe::Paris,
            catch_up: Duration::hours(3),
            zones: vec![],
        }
        .with_zones([America::New_York, Europe::Berlin]);
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let gate = |now| plan.due_filter(date, now).gate(stop.clone());
        // 07:00 Paris: Paris and Berlin (same offset), not New York.
        assert_eq!(
            gate(at("2026-11-27T06:00:00Z"))
                .enqueue(&*store, date)
                .unwrap(),
            2
        );
        assert_eq!(store.ledger_counts(date).unwrap().pending, 2);
        // 07:00 in New York: the last one.
        assert_eq!(
            gate(at("2026-11-27T12:00:00Z"))
                .enqueue(&*store, date)
                .unwrap(),
            1
        );
        assert_eq!(store.ledger_counts(date).unwrap().pending, 3);
        let g = gate(at("2026-11-27T12:00:00Z"));
        let me = Holder::new("serve-here");
        assert_eq!(g.claim_for(&*store, date, &me, 1).unwrap().len(), 1);
        stop.store(true, Ordering::SeqCst);
        assert!(
            g.claim_for(&*store, date, &me, 10).unwrap().is_empty(),
            "stopping: nothing new"
        );
    }

    #[test]
    fn a_stopping_gate_records_the_outcomes_in_flight_and_hands_out_no_new_row() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        for i in 0..4 {
            store
                .upsert_subscriber(&sub(&format!("reader{i}@example.org"), None))
                .unwrap();
        }
        let plan = Plan {
            send_time: NaiveTime::from_hms_opt(7, 0, 0).unwrap(),
            timezone: Europe::Paris,
            catch_up: Duration::hours(3),
            zones: vec![],
        };
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        let now = "2026-11-27T06:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let gate = plan.due_filter(date, now).gate(stop.clone());
        let l: &dyn Ledger = &*store;
        assert_eq!(gate.enqueue(l, date).unwrap(), 4);
        // Running: the merged hop claims like the store.
        let me = Holder::new("serve-here");
        let first = gate.claim_for(l, date, &me, 2).unwrap();
        assert_eq!(first.len(), 2);
        let ids: Vec<i64> = first.iter().map(|d| d.subscriber.id).collect();
        assert_eq!(
            gate.record_and_mark(l, date, &me, &[], &ids, now).unwrap(),
            vec![true, true]
        );

        stop.store(true, Ordering::SeqCst);
        let outcomes = [
            (
                ids[0],
                DeliveryOutcome::Sent {
                    message_id: "a@example.org".into(),
                },
            ),
            (
                ids[1],
                DeliveryOutcome::Retry {
                    error: "421 try later".into(),
                },
            ),
        ];
        let third = store.ledger_next(date, ids[1], 1).unwrap()[0].subscriber.id;
        let moved = gate
            .record_and_mark(l, date, &me, &outcomes, &[third], now)
            .unwrap();
        assert_eq!(moved, vec![false], "stopping: no row marked");
        assert!(
            gate.next(l, date, i64::MIN, 10).unwrap().is_empty(),
            "stopping: nothing read ahead"
        );
        assert!(
            gate.claim_for(l, date, &me, 10).unwrap().is_empty(),
            "stopping: nothing claimed"
        );
        assert_eq!(
            gate.take_over(l, date, &me, &[], now).unwrap(),
            TakeOver::default(),
            "stopping: nobody else waited for"
        );
        assert_eq!(
            store.ledger_counts(date).unwrap(),
            LedgerCounts {
                pending: 3,
                sending: 0,
                sent: 1,
                failed: 0
            },
            "both outcomes recorded, the rest left pending"
        );
    }
}
