//! "Nothing new" told to the processes waiting for an issue. The holder of an
//! issue's lease that builds it and finds no story in the window releases the
//! lease with no issue frozen; the processes waiting for its issue would each
//! take the lease in turn and read every source again, only to find the same.
//! So before releasing the lease the holder records the finding, a row named
//! `nothing-new:<date>` in the leases table whose holder column names this one
//! finding (unique). A waiter reads that row before it finds the lease held
//! (`take_or_join`: read after, a finding made in between would look old), and
//! when the lease comes free with no issue frozen and the row has changed
//! since, somebody found nothing new while it waited: it stops as they did
//! (nothing to send) instead of building again. A build that failed (no source
//! read) records nothing: its waiters build again, as a failed build is retried.
//! The row never holds anything (it is written as expired), and a process that
//! starts after the finding looks at the sources again.

use chrono::NaiveDate;

use crate::lease::lease_holder;
use crate::store::{Leases, StoreResult};

/// The name of the row of `date` in the leases table.
fn mark_name(date: NaiveDate) -> String {
    format!("nothing-new:{date}")
}

/// The last finding of nothing new for `date`, as [`last`] read it (the
/// default: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen(Option<String>);

/// The last finding recorded for `date` (read before waiting).
pub fn last(store: &dyn Leases, date: NaiveDate) -> StoreResult<Seen> {
    store.lease_holder(&mark_name(date)).map(Seen)
}

/// Records that the holder of the lease of `date` found nothing new: called
/// by that holder, before it releases the lease.
pub fn record(store: &dyn Leases, date: NaiveDate) -> StoreResult<()> {
    let finding = lease_holder("found");
    // Expired as written (at the Unix epoch): it holds nothing, and the next
    // finding, on any machine whatever its clock, overwrites it.
    store.try_lease(
        &mark_name(date),
        &finding,
        crate::clock::now(),
        chrono::DateTime::UNIX_EPOCH,
    )?;
    Ok(())
}

/// Whether somebody found nothing new for `date` since `seen` was read.
pub fn found_since(store: &dyn Leases, date: NaiveDate, seen: &Seen) -> StoreResult<bool> {
    Ok(changed(seen, &last(store, date)?))
}

/// Whether `now` is a finding made after `before`.
fn changed(before: &Seen, now: &Seen) -> bool {
    now.0.is_some() && now != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use chrono::{Duration, TimeZone, Utc};

    fn date() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 27).unwrap()
    }

    #[test]
    fn a_finding_is_news_only_to_those_who_looked_before_it() {
        let store = SqliteStore::open_in_memory().unwrap();
        let before = last(&store, date()).unwrap();
        assert!(!found_since(&store, date(), &before).unwrap(), "none yet");
        record(&store, date()).unwrap();
        assert!(found_since(&store, date(), &before).unwrap());
        let after = last(&store, date()).unwrap();
        assert!(!found_since(&store, date(), &after).unwrap(), "old news");
        // A second finding (another build, another machine) is news again.
        record(&store, date()).unwrap();
        assert!(found_since(&store, date(), &after).unwrap());
        let other_day = date().succ_opt().unwrap();
        assert_eq!(last(&store, other_day).unwrap(), Seen(None), "per date");
    }

    #[test]
    fn a_finding_holds_neither_the_issues_lease_nor_the_next_finding() {
        let store = SqliteStore::open_in_memory().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap();
        record(&store, date()).unwrap();
        let lease = crate::lease::issue_lease(date());
        assert!(store
            .try_lease(&lease, "send-a", now, now + Duration::minutes(5))
            .unwrap());
        // A finding written by a machine whose clock is ahead does not stop
        // the next one from being recorded.
        let ahead = crate::clock::now() + Duration::hours(1);
        assert!(store
            .try_lease(
                &mark_name(date()),
                "found-ahead",
                ahead,
                chrono::DateTime::UNIX_EPOCH
            )
            .unwrap());
        let seen = last(&store, date()).unwrap();
        record(&store, date()).unwrap();
        assert!(found_since(&store, date(), &seen).unwrap());
    }

    #[test]
    fn only_a_new_finding_counts() {
        let none = Seen(None);
        let a = Seen(Some("found-a".into()));
        let b = Seen(Some("found-b".into()));
        assert!(!changed(&none, &none));
        assert!(changed(&none, &a));
        assert!(!changed(&a, &a));
        assert!(changed(&a, &b));
        // The row gone (a store copied without leases): nothing was found.
        assert!(!changed(&a, &none));
    }
}
