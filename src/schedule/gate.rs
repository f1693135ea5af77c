//! A [`Store`] seen through a send pass's [`DueFilter`]: the send loop enqueues
//! only the subscribers whose local send instant has come. Everything else is
//! passed through unchanged.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use super::DueFilter;
use crate::domain::{Subscriber, SubscriberEmail, SubscriberStatus};
use crate::store::{
    Delivery, DeliveryOutcome, LedgerCounts, NewSubscriber, PendingSignup, RunRecord, Store,
    StoreResult, Upserted,
};

pub struct ZoneGate {
    pub inner: Arc<dyn Store>,
    pub due: DueFilter,
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
    fn record_run(&self, run: &RunRecord) -> StoreResult<()> {
        self.inner.record_run(run)
    }
    fn last_run(&self) -> StoreResult<Option<RunRecord>> {
        self.inner.last_run()
    }
    fn ping(&self) -> StoreResult<()> {
        self.inner.ping()
    }
}
