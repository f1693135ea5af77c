//! A [`Store`] seen through a send pass's [`DueFilter`]: the send loop enqueues
//! only the subscribers whose local send instant has come. Everything else is
//! passed through unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use super::DueFilter;
use crate::domain::{Locale, Subscriber, SubscriberEmail, SubscriberStatus};
use crate::store::{
    Delivery, DeliveryOutcome, Holder, LedgerCounts, NewSubscriber, PendingSignup, RunRecord,
    SenderSeen, Store, StoreResult, TakeOver, Upserted,
};

pub struct ZoneGate {
    pub inner: Arc<dyn Store>,
    pub due: DueFilter,
    /// Once set (the service is stopping), no new row is claimed: the send loop
    /// finishes the messages in flight and ends, the rest stays pending.
    pub stop: Arc<AtomicBool>,
}

impl Store for ZoneGate {
    fn ledger_enqueue(&self, date: NaiveDate, max_id: Option<i64>) -> StoreResult<u64> {
        if self.due.plan.zones.is_empty() || date != self.due.date {
            return self.inner.ledger_enqueue(date, max_id);
        }
        let (zones, with_unzoned) = self.due.due_zones();
        self.inner
            .ledger_enqueue_in_zones(date, &zones, with_unzoned)
    }

    fn upsert_subscriber(&self, new: &NewSubscriber) -> StoreResult<Upserted> {
        self.inner.upsert_subscriber(new)
    }
    fn upsert_many(&self, rows: &[NewSubscriber]) -> StoreResult<Vec<Upserted>> {
        self.inner.upsert_many(rows)
    }
    fn subscriber_by_email(&self, email: &SubscriberEmail) -> StoreResult<Option<Subscriber>> {
        self.inner.subscriber_by_email(email)
    }
    fn subscriber_by_id(&self, id: i64) -> StoreResult<Option<Subscriber>> {
        self.inner.subscriber_by_id(id)
    }
    fn remove_subscriber(&self, email: &SubscriberEmail) -> StoreResult<bool> {
        self.inner.remove_subscriber(email)
    }
    fn set_status(
        &self,
        id: i64,
        status: SubscriberStatus,
        reason: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.set_status(id, status, reason, at)
    }
    fn set_preferences(
        &self,
        id: i64,
        locale: Option<Locale>,
        categories: &[String],
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.set_preferences(id, locale, categories, at)
    }
    fn subscribers_page(
        &self,
        status: Option<SubscriberStatus>,
        after_id: i64,
        limit: usize,
    ) -> StoreResult<Vec<Subscriber>> {
        self.inner.subscribers_page(status, after_id, limit)
    }
    fn count_by_status(&self) -> StoreResult<Vec<(SubscriberStatus, u64)>> {
        self.inner.count_by_status()
    }
    fn put_signup(&self, signup: &PendingSignup) -> StoreResult<()> {
        self.inner.put_signup(signup)
    }
    fn take_signup(&self, email: &SubscriberEmail) -> StoreResult<Option<PendingSignup>> {
        self.inner.take_signup(email)
    }
    fn ledger_enqueue_in_zones(
        &self,
        date: NaiveDate,
        zones: &[String],
        with_unzoned: bool,
    ) -> StoreResult<u64> {
        self.inner
            .ledger_enqueue_in_zones(date, zones, with_unzoned)
    }
    fn ledger_claim(
        &self,
        date: NaiveDate,
        limit: usize,
        include_in_doubt: bool,
    ) -> StoreResult<Vec<Delivery>> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.ledger_claim(date, limit, include_in_doubt)
    }
    fn ledger_record(
        &self,
        date: NaiveDate,
        outcomes: &[(i64, DeliveryOutcome)],
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.inner.ledger_record(date, outcomes, at)
    }
    /// Once stopping, no row is read ahead.
    fn ledger_next(&self, date: NaiveDate, after: i64, limit: usize) -> StoreResult<Vec<Delivery>> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.ledger_next(date, after, limit)
    }
    /// One store hop per batch, as the inner store does it; once stopping, the
    /// outcomes are still recorded but no row is marked: the messages staged
    /// for them are dropped before their end, undelivered, and stay pending.
    fn ledger_record_and_mark(
        &self,
        date: NaiveDate,
        holder: &Holder,
        outcomes: &[(i64, DeliveryOutcome)],
        marks: &[i64],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<bool>> {
        if self.stop.load(Ordering::SeqCst) {
            if !outcomes.is_empty() {
                self.inner.ledger_record(date, outcomes, at)?;
            }
            return Ok(vec![false; marks.len()]);
        }
        self.inner
            .ledger_record_and_mark(date, holder, outcomes, marks, at)
    }
    fn sender_seen(&self, date: NaiveDate, holder: &Holder, now: DateTime<Utc>) -> StoreResult<()> {
        self.inner.sender_seen(date, holder, now)
    }
    fn senders(&self, date: NaiveDate) -> StoreResult<Vec<SenderSeen>> {
        self.inner.senders(date)
    }
    /// Once stopping, no row is claimed.
    fn ledger_claim_for(
        &self,
        date: NaiveDate,
        holder: &Holder,
        limit: usize,
    ) -> StoreResult<Vec<Delivery>> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(Vec::new());
        }
        self.inner.ledger_claim_for(date, holder, limit)
    }
    /// Once stopping, nothing is taken over and nobody else is waited for.
    fn ledger_take_over(
        &self,
        date: NaiveDate,
        holder: &Holder,
        gone: &[Holder],
        now: DateTime<Utc>,
    ) -> StoreResult<TakeOver> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(TakeOver::default());
        }
        self.inner.ledger_take_over(date, holder, gone, now)
    }
    fn ledger_release(&self, date: NaiveDate, holder: &Holder) -> StoreResult<()> {
        self.inner.ledger_release(date, holder)
    }
    fn sender_left(&self, holder: &Holder) -> StoreResult<()> {
        self.inner.sender_left(holder)
    }
    fn ledger_counts(&self, date: NaiveDate) -> StoreResult<LedgerCounts> {
        self.inner.ledger_counts(date)
    }
    fn ledger_failures(&self, date: NaiveDate) -> StoreResult<Vec<(String, String)>> {
        self.inner.ledger_failures(date)
    }
    fn ledger_dates(&self) -> StoreResult<Vec<NaiveDate>> {
        self.inner.ledger_dates()
    }
    fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> StoreResult<bool> {
        self.inner.try_lease(name, holder, now, until)
    }
    fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.inner.release_lease(name, holder)
    }
    fn lease_holder(&self, name: &str) -> StoreResult<Option<String>> {
        self.inner.lease_holder(name)
    }
    fn record_run(&self, run: &RunRecord) -> StoreResult<()> {
        self.inner.record_run(run)
    }
    fn last_run(&self) -> StoreResult<Option<RunRecord>> {
        self.inner.last_run()
    }
    fn ping(&self) -> StoreResult<()> {
        self.inner.ping()
    }
    fn issues(&self) -> Option<&dyn crate::store::IssueStore> {
        self.inner.issues()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SubscriberEmail;
    use crate::schedule::Plan;
    use crate::store::SqliteStore;
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
        let gate = |now| ZoneGate {
            inner: store.clone(),
            due: plan.due_filter(date, now),
            stop: stop.clone(),
        };
        // 07:00 Paris: Paris and Berlin (same offset), not New York.
        assert_eq!(
            gate(at("2026-11-27T06:00:00Z"))
                .ledger_enqueue(date, None)
                .unwrap(),
            2
        );
        assert_eq!(store.ledger_counts(date).unwrap().pending, 2);
        // 07:00 in New York: the last one.
        assert_eq!(
            gate(at("2026-11-27T12:00:00Z"))
                .ledger_enqueue(date, None)
                .unwrap(),
            1
        );
        assert_eq!(store.ledger_counts(date).unwrap().pending, 3);
        let g = gate(at("2026-11-27T12:00:00Z"));
        assert_eq!(g.ledger_claim(date, 1, false).unwrap().len(), 1);
        stop.store(true, Ordering::SeqCst);
        assert!(
            g.ledger_claim(date, 10, false).unwrap().is_empty(),
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
        let gate = ZoneGate {
            inner: store.clone(),
            due: plan.due_filter(date, now),
            stop: stop.clone(),
        };
        assert_eq!(gate.ledger_enqueue(date, None).unwrap(), 4);
        // Running: the merged hop claims like the inner store.
        let me = Holder::new("serve-here");
        let first = gate.ledger_claim_for(date, &me, 2).unwrap();
        assert_eq!(first.len(), 2);
        let ids: Vec<i64> = first.iter().map(|d| d.subscriber.id).collect();
        assert_eq!(
            gate.ledger_record_and_mark(date, &me, &[], &ids, now)
                .unwrap(),
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
            .ledger_record_and_mark(date, &me, &outcomes, &[third], now)
            .unwrap();
        assert_eq!(moved, vec![false], "stopping: no row marked");
        assert!(
            gate.ledger_next(date, i64::MIN, 10).unwrap().is_empty(),
            "stopping: nothing read ahead"
        );
        assert!(
            gate.ledger_claim_for(date, &me, 10).unwrap().is_empty(),
            "stopping: nothing claimed"
        );
        assert_eq!(
            gate.ledger_take_over(date, &me, &[], now).unwrap(),
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
