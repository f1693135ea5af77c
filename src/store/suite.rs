//! The store suite: every behaviour of [`Store`] checked the same way on each
//! backend. `store_suite!(fresh)` in a backend's tests makes one `#[test]` per
//! case, each on a fresh database from `fresh()`.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::{
    Backend, DeliveryOutcome, Holder, LedgerCounts, NewSubscriber, PendingSignup, RunRecord,
    RunStatus, SenderRows, SuppressionReason, TakeOver, Upserted,
};
use crate::domain::{Locale, Subscriber, SubscriberEmail, SubscriberStatus};

/// A fresh database of one backend, for one test.
pub(crate) trait Db {
    /// A new handle on this database: its own connections, as another process has.
    fn open(&self) -> Arc<dyn Backend>;
    /// The one text value (or NULL) that `sql` selects, read behind the store's back.
    fn text(&self, sql: &str) -> Option<String>;
}

/// One `#[test]` per case of the suite, on databases made by `$fresh()`
/// (which returns a `Box<dyn Db>`).
#[macro_export]
macro_rules! store_suite {
    ($fresh:path) => {
        $crate::store_suite!(@cases $fresh; addresses_differing_only_in_letter_case_are_one_subscriber_spelled_as_first_given,
            an_unsubscribed_address_stays_unsubscribed_after_a_reimport,
            an_upsert_without_a_field_keeps_the_stored_one,
            an_import_can_unsubscribe_but_never_resubscribe,
            pages_walk_every_subscriber_once_in_id_order,
            removing_a_subscriber_removes_their_ledger_rows,
            a_removed_readers_id_is_never_given_to_the_next_reader,
            an_address_unsubscribed_then_removed_stays_out_of_every_import,
            forgetting_an_address_erases_its_data_and_keeps_only_a_keyed_hash,
            enqueue_adds_only_active_subscribers_once,
            claim_then_record_moves_rows_through_every_state,
            reading_ahead_changes_nothing_and_marks_move_only_pending_rows_of_active_subscribers,
            reading_ahead_drops_rows_of_subscribers_gone_meanwhile_and_still_fills_the_batch,
            outcomes_of_one_row_in_one_call_apply_in_order_and_a_retried_row_is_marked_again,
            preferences_replace_language_and_sections_and_leave_the_status_alone,
            a_hard_bounce_marks_the_subscriber_bounced_and_out_of_the_next_issue,
            rows_in_flight_when_a_process_died_come_back_once_as_in_doubt,
            a_subscriber_who_unsubscribes_mid_send_is_dropped_from_the_ledger,
            two_connections_claiming_at_once_never_get_the_same_row,
            senders_claim_apart_and_mark_only_the_rows_they_hold,
            senders_claiming_at_once_never_get_the_same_row,
            the_rows_of_a_sender_gone_silent_are_taken_over_in_doubt_or_freed,
            rows_a_sender_left_in_sending_go_to_the_next_sender_in_doubt,
            a_lease_is_exclusive_until_it_expires,
            a_signup_waits_apart_until_it_is_taken_once,
            the_last_run_is_the_latest_finished,
            a_sent_message_is_found_by_its_message_id_and_address_together);
        $crate::store_suite!(@cases $fresh;
            the_first_issue_frozen_is_the_one_every_later_process_gets,
            processes_freezing_one_issue_at_once_all_get_the_same,
            a_forced_rebuild_replaces_the_issue_and_drops_its_variants,
            the_first_variant_kept_is_the_one_every_sender_gets,
            frozen_dates_come_newest_first,
            the_variants_in_use_are_each_language_and_sections_of_active_readers_once);
        $crate::store_suite!(@cases $fresh;
            a_batch_giving_one_address_many_times_does_what_one_row_at_a_time_does,
            a_batch_mixing_new_stored_and_suppressed_addresses_gives_each_row_its_outcome,
            a_batch_larger_than_a_chunk_gives_outcomes_in_input_order_and_ids_in_first_seen_order);
    };
    (@cases $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let db = $fresh();
                $crate::store::suite::$name(&*db);
            }
        )*
    };
}

mod issues;
pub(crate) use issues::*;
mod upserts;
pub(crate) use upserts::*;

pub(crate) fn email(s: &str) -> SubscriberEmail {
    SubscriberEmail::parse(s).unwrap()
}

pub(crate) fn new_sub(s: &str, status: SubscriberStatus) -> NewSubscriber {
    NewSubscriber {
        email: email(s),
        name: None,
        locale: None,
        categories: vec![],
        timezone: None,
        status,
    }
}

pub(crate) fn active(s: &str) -> NewSubscriber {
    new_sub(s, SubscriberStatus::Active)
}

pub(crate) fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 2).unwrap()
}

pub(crate) fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

/// The sender of the tests that need only one.
fn me() -> Holder {
    Holder::new("send-here")
}

fn ids_of(rows: &[super::Delivery]) -> Vec<i64> {
    rows.iter().map(|d| d.subscriber.id).collect()
}

fn sent(id: i64) -> (i64, DeliveryOutcome) {
    (
        id,
        DeliveryOutcome::Sent {
            message_id: format!("{id}@x"),
        },
    )
}

fn sub_of(s: &Arc<dyn Backend>, addr: &str) -> Subscriber {
    s.subscriber_by_email(&email(addr)).unwrap().unwrap()
}

/// A store with `n` active readers r0.. enqueued for `date()`.
fn enqueued(db: &dyn Db, n: usize) -> Arc<dyn Backend> {
    let s = db.open();
    add_many(&s, n);
    s.ledger_enqueue(date(), None).unwrap();
    s
}

fn lease(
    s: &Arc<dyn Backend>,
    name: &str,
    holder: &str,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> bool {
    s.try_lease(name, holder, from, until).unwrap()
}

pub(crate) fn add_many(store: &Arc<dyn Backend>, n: usize) {
    let rows: Vec<_> = (0..n)
        .map(|i| active(&format!("r{i}@example.com")))
        .collect();
    store.upsert_many(&rows).unwrap();
}

pub(crate) fn addresses_differing_only_in_letter_case_are_one_subscriber_spelled_as_first_given(
    db: &dyn Db,
) {
    let s = db.open();
    assert_eq!(
        s.upsert_subscriber(&active("Jo@Example.COM")).unwrap(),
        Upserted::Inserted
    );
    assert_eq!(
        s.upsert_subscriber(&active("Jo@example.com")).unwrap(),
        Upserted::Unchanged
    );
    // The local part's case does not make another address either (finding 4).
    assert_eq!(
        s.upsert_subscriber(&active("jo@EXAMPLE.com")).unwrap(),
        Upserted::Unchanged
    );
    let sub = s
        .subscriber_by_email(&email("JO@example.com"))
        .unwrap()
        .unwrap();
    assert_eq!(
        sub.email.as_str(),
        "Jo@example.com",
        "the spelling given is kept"
    );
    assert_eq!(
        s.count_by_status().unwrap(),
        vec![(SubscriberStatus::Active, 1)]
    );
}

pub(crate) fn an_unsubscribed_address_stays_unsubscribed_after_a_reimport(db: &dyn Db) {
    let s = db.open();
    s.upsert_subscriber(&active("a@example.com")).unwrap();
    let id = sub_of(&s, "a@example.com").id;
    assert!(s
        .set_status(id, SubscriberStatus::Unsubscribed, "one-click", at(8, 0))
        .unwrap());
    assert_eq!(
        s.upsert_subscriber(&active("a@example.com")).unwrap(),
        Upserted::Unchanged
    );
    let mut named = active("a@example.com");
    named.name = Some("Alice".into());
    named.locale = Some(Locale::Fr);
    let outs = s.upsert_many(&[named]).unwrap();
    assert_eq!(outs, vec![Upserted::Updated]);
    let sub = sub_of(&s, "a@example.com");
    assert_eq!(sub.status, SubscriberStatus::Unsubscribed);
    assert_eq!(sub.name.as_deref(), Some("Alice"));
    assert_eq!(sub.locale, Some(Locale::Fr));
}

pub(crate) fn an_upsert_without_a_field_keeps_the_stored_one(db: &dyn Db) {
    let s = db.open();
    let mut full = active("a@example.com");
    full.name = Some("Alice".into());
    full.categories = vec!["tech".into(), "world".into()];
    full.timezone = Some(chrono_tz::America::Montreal);
    s.upsert_subscriber(&full).unwrap();
    assert_eq!(
        s.upsert_subscriber(&active("a@example.com")).unwrap(),
        Upserted::Unchanged
    );
    let sub = sub_of(&s, "a@example.com");
    assert_eq!(sub.categories, vec!["tech", "world"]);
    assert_eq!(sub.timezone, Some(chrono_tz::America::Montreal));
}

pub(crate) fn an_import_can_unsubscribe_but_never_resubscribe(db: &dyn Db) {
    let s = db.open();
    s.upsert_subscriber(&active("a@example.com")).unwrap();
    let out = s
        .upsert_subscriber(&new_sub("a@example.com", SubscriberStatus::Unsubscribed))
        .unwrap();
    assert_eq!(out, Upserted::Updated);
    let sub = sub_of(&s, "a@example.com");
    assert_eq!(sub.status, SubscriberStatus::Unsubscribed);
    let unsub_at = db.text(&format!(
        "SELECT CAST(unsubscribed_at AS TEXT) FROM subscribers WHERE id = {}",
        sub.id
    ));
    assert!(unsub_at.is_some());
}

pub(crate) fn pages_walk_every_subscriber_once_in_id_order(db: &dyn Db) {
    let s = db.open();
    add_many(&s, 25);
    let mut seen = vec![];
    let mut after = 0;
    loop {
        let page = s.subscribers_page(None, after, 10).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap().id;
        seen.extend(page.into_iter().map(|p| p.id));
    }
    assert_eq!(seen.len(), 25);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let id = seen[3];
    s.set_status(id, SubscriberStatus::Bounced, "550", at(1, 0))
        .unwrap();
    let bounced = s
        .subscribers_page(Some(SubscriberStatus::Bounced), 0, 10)
        .unwrap();
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0].id, id);
    let counts = s.count_by_status().unwrap();
    assert!(counts.contains(&(SubscriberStatus::Active, 24)));
    assert!(counts.contains(&(SubscriberStatus::Bounced, 1)));
}

pub(crate) fn removing_a_subscriber_removes_their_ledger_rows(db: &dyn Db) {
    let s = db.open();
    add_many(&s, 3);
    assert_eq!(s.ledger_enqueue(date(), None).unwrap(), 3);
    assert!(s.remove_subscriber(&email("r1@example.com")).unwrap());
    assert!(!s.remove_subscriber(&email("r1@example.com")).unwrap());
    assert_eq!(s.ledger_counts(date()).unwrap().pending, 2);
}

pub(crate) fn a_removed_readers_id_is_never_given_to_the_next_reader(db: &dyn Db) {
    // Finding 2: SQLite reuses the highest rowid after a delete unless AUTOINCREMENT.
    let s = db.open();
    add_many(&s, 2);
    let gone = sub_of(&s, "r1@example.com");
    assert!(s.remove_subscriber(&gone.email).unwrap());
    s.upsert_subscriber(&active("next@example.com")).unwrap();
    let next = sub_of(&s, "next@example.com");
    assert!(next.id > gone.id, "{} reused {}", next.id, gone.id);
    assert_ne!(next.link_key, gone.link_key);
    assert!(s.subscriber_by_id(gone.id).unwrap().is_none());
    assert!(s.subscriber_by_link_key(&gone.link_key).unwrap().is_none());
    assert_eq!(
        s.subscriber_by_link_key(&next.link_key)
            .unwrap()
            .unwrap()
            .email,
        next.email
    );
    // A row added by this version never answers to an old id-naming link.
    assert!(s.subscriber_by_legacy_id(next.id).unwrap().is_none());
}

pub(crate) fn an_address_unsubscribed_then_removed_stays_out_of_every_import(db: &dyn Db) {
    // Finding 3: unsubscribe → remove → import made the address active again.
    let s = db.open();
    s.upsert_subscriber(&active("Zoe@example.com")).unwrap();
    let z = sub_of(&s, "zoe@example.com");
    s.set_status(z.id, SubscriberStatus::Unsubscribed, "test", at(8, 0))
        .unwrap();
    assert!(s.remove_subscriber(&email("ZOE@example.com")).unwrap());
    assert!(s.subscriber_by_email(&z.email).unwrap().is_none());
    assert_eq!(
        s.suppression(&email("zoe@example.com"))
            .unwrap()
            .unwrap()
            .reason,
        SuppressionReason::Unsubscribed
    );
    assert_eq!(
        s.upsert_many(&[active("zoe@Example.com"), active("new@example.com")])
            .unwrap(),
        vec![Upserted::Suppressed, Upserted::Inserted]
    );
    assert!(s.subscriber_by_email(&z.email).unwrap().is_none());
    // Their own confirmed sign-up lifts it.
    assert!(s.lift_suppression(&z.email).unwrap());
    assert_eq!(
        s.upsert_subscriber(&active("zoe@example.com")).unwrap(),
        Upserted::Inserted
    );
}

pub(crate) fn forgetting_an_address_erases_its_data_and_keeps_only_a_keyed_hash(db: &dyn Db) {
    let s = db.open();
    add_many(&s, 2);
    s.ledger_enqueue(date(), None).unwrap();
    s.put_signup(&PendingSignup {
        subscriber: new_sub("r0@example.com", SubscriberStatus::Pending),
        requested_at: at(9, 0),
    })
    .unwrap();
    assert!(s.forget_subscriber(&email("R0@example.com")).unwrap());
    let left = db.text(
        "SELECT CAST((SELECT COUNT(*) FROM subscribers WHERE email_key = 'r0@example.com')
                   + (SELECT COUNT(*) FROM signups WHERE email_key = 'r0@example.com')
                   + (SELECT COUNT(*) FROM deliveries) AS TEXT)",
    );
    assert_eq!(left.as_deref(), Some("1"), "only r1's ledger row is left");
    let hash = db.text("SELECT address_hash FROM suppressions").unwrap();
    let reason = db.text("SELECT reason FROM suppressions").unwrap();
    assert_eq!(reason, "forgotten");
    assert_eq!(hash.len(), 64);
    assert!(!hash.contains("r0"));
    // Keyed: not the plain SHA-256 of the address.
    use sha2::Digest;
    assert_ne!(
        hash,
        crate::config::hex(&sha2::Sha256::digest(b"r0@example.com"))
    );
    assert_eq!(
        s.upsert_subscriber(&active("r0@example.com")).unwrap(),
        Upserted::Suppressed
    );
    // Removing the other one afterwards does not downgrade "forgotten".
    assert!(!s.forget_subscriber(&email("r0@example.com")).unwrap());
    assert_eq!(
        s.suppression(&email("r0@example.com"))
            .unwrap()
            .unwrap()
            .reason,
        SuppressionReason::Forgotten
    );
}

pub(crate) fn enqueue_adds_only_active_subscribers_once(db: &dyn Db) {
    let s = db.open();
    add_many(&s, 5);
    s.upsert_subscriber(&new_sub("u@example.com", SubscriberStatus::Unsubscribed))
        .unwrap();
    s.upsert_subscriber(&new_sub("p@example.com", SubscriberStatus::Pending))
        .unwrap();
    let b = sub_of(&s, "r0@example.com");
    s.set_status(b.id, SubscriberStatus::Bounced, "550", at(1, 0))
        .unwrap();
    assert_eq!(s.ledger_enqueue(date(), None).unwrap(), 4);
    assert_eq!(s.ledger_enqueue(date(), None).unwrap(), 0);
    let first = s.subscribers_page(None, 0, 2).unwrap();
    let other = date().succ_opt().unwrap();
    assert_eq!(s.ledger_enqueue(other, Some(first[1].id)).unwrap(), 1);
    assert_eq!(s.ledger_dates().unwrap(), vec![other, date()]);
}

pub(crate) fn claim_then_record_moves_rows_through_every_state(db: &dyn Db) {
    let s = enqueued(db, 4);
    let claimed = s.ledger_claim(date(), 10, false).unwrap();
    assert_eq!(claimed.len(), 4);
    assert!(claimed
        .windows(2)
        .all(|w| w[0].subscriber.id < w[1].subscriber.id));
    assert!(claimed.iter().all(|d| !d.in_doubt && d.attempts == 0));
    assert_eq!(s.ledger_counts(date()).unwrap().sending, 4);
    assert!(s.ledger_claim(date(), 10, false).unwrap().is_empty());
    let ids: Vec<i64> = claimed.iter().map(|d| d.subscriber.id).collect();
    s.ledger_record(
        date(),
        &[
            (
                ids[0],
                DeliveryOutcome::Sent {
                    message_id: "<1@x>".into(),
                },
            ),
            (
                ids[1],
                DeliveryOutcome::Retry {
                    error: "451 later".into(),
                },
            ),
            (
                ids[2],
                DeliveryOutcome::Failed {
                    error: "554 policy".into(),
                    hard_bounce: false,
                },
            ),
            (
                ids[3],
                DeliveryOutcome::Failed {
                    error: "550 no such user".into(),
                    hard_bounce: true,
                },
            ),
        ],
        at(7, 1),
    )
    .unwrap();
    assert_eq!(
        s.ledger_counts(date()).unwrap(),
        LedgerCounts {
            pending: 1,
            sending: 0,
            sent: 1,
            failed: 2
        }
    );
    let mid = db.text(&format!(
        "SELECT message_id FROM deliveries WHERE subscriber_id = {}",
        ids[0]
    ));
    let err = db.text(&format!(
        "SELECT last_error FROM deliveries WHERE subscriber_id = {}",
        ids[0]
    ));
    assert_eq!((mid.as_deref(), err), (Some("<1@x>"), None));
    // The retried row comes back with its attempt counted.
    let again = s.ledger_claim(date(), 10, false).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].subscriber.id, again[0].attempts), (ids[1], 1));
    // A sent row is never moved back by a late outcome.
    s.ledger_record(
        date(),
        &[(ids[0], DeliveryOutcome::Retry { error: "x".into() })],
        at(7, 2),
    )
    .unwrap();
    assert_eq!(s.ledger_counts(date()).unwrap().sent, 1);
    let failures = s.ledger_failures(date()).unwrap();
    assert_eq!(
        failures,
        vec![
            ("r2@example.com".to_string(), "554 policy".to_string()),
            ("r3@example.com".to_string(), "550 no such user".to_string()),
        ]
    );
}

/// A row can have several outcomes in one store call (a retry, then its
/// delivery), and a row whose retry is recorded can be marked again in the same
/// call: each applies in its order.
pub(crate) fn outcomes_of_one_row_in_one_call_apply_in_order_and_a_retried_row_is_marked_again(
    db: &dyn Db,
) {
    let s = enqueued(db, 3);
    let ids = ids_of(&s.ledger_next(date(), i64::MIN, 3).unwrap());
    assert_eq!(
        s.ledger_record_and_mark(date(), &me(), &[], &ids, at(7, 0))
            .unwrap(),
        vec![true; 3]
    );
    let retry = |id: i64| {
        (
            id,
            DeliveryOutcome::Retry {
                error: "421 later".into(),
            },
        )
    };
    let moved = s
        .ledger_record_and_mark(
            date(),
            &me(),
            &[retry(ids[0]), sent(ids[0]), retry(ids[1]), sent(ids[2])],
            &[ids[1]],
            at(7, 1),
        )
        .unwrap();
    assert_eq!(
        moved,
        vec![true],
        "retried, then marked for its next attempt"
    );
    let row = |id: i64| {
        db.text(&format!(
            "SELECT state || ' ' || attempts || ' ' || COALESCE(message_id, '-') \
             FROM deliveries WHERE subscriber_id = {id}"
        ))
        .unwrap()
    };
    assert_eq!(row(ids[0]), format!("sent 2 {}@x", ids[0]));
    assert_eq!(row(ids[1]), "sending 1 -");
    assert_eq!(row(ids[2]), format!("sent 1 {}@x", ids[2]));
    // Recorded alone, in order too.
    s.ledger_record(date(), &[retry(ids[1]), sent(ids[1])], at(7, 2))
        .unwrap();
    assert_eq!(row(ids[1]), format!("sent 3 {}@x", ids[1]));
}

pub(crate) fn reading_ahead_changes_nothing_and_marks_move_only_pending_rows_of_active_subscribers(
    db: &dyn Db,
) {
    let s = db.open();
    add_many(&s, 5);
    s.ledger_enqueue(date(), None).unwrap();
    // Read ahead: in id order, from the cursor, nothing changed.
    let ahead = s.ledger_next(date(), i64::MIN, 3).unwrap();
    let ids: Vec<i64> = ahead.iter().map(|d| d.subscriber.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(s.ledger_counts(date()).unwrap().pending, 5);
    let rest = s.ledger_next(date(), ids[2], 10).unwrap();
    assert_eq!(rest.len(), 2, "fewer than asked: the end");
    assert!(rest.iter().all(|d| d.subscriber.id > ids[2]));

    // One unsubscribes after being read: their mark is refused and the row dropped.
    s.set_status(ids[2], SubscriberStatus::Unsubscribed, "test", at(7, 0))
        .unwrap();
    let moved = s
        .ledger_record_and_mark(date(), &me(), &[], &[ids[0], ids[1], ids[2]], at(7, 0))
        .unwrap();
    assert_eq!(moved, vec![true, true, false]);
    assert_eq!(
        s.ledger_counts(date()).unwrap(),
        LedgerCounts {
            pending: 2,
            sending: 2,
            sent: 0,
            failed: 0
        }
    );
    // Marked already (another sender took it): refused, left as it is.
    assert_eq!(
        s.ledger_record_and_mark(date(), &me(), &[], &[ids[0]], at(7, 1))
            .unwrap(),
        vec![false]
    );
    // Outcomes and the next marks in one call.
    let moved = s
        .ledger_record_and_mark(
            date(),
            &me(),
            &[
                (
                    ids[0],
                    DeliveryOutcome::Sent {
                        message_id: "a@x".into(),
                    },
                ),
                (
                    ids[1],
                    DeliveryOutcome::Failed {
                        error: "550".into(),
                        hard_bounce: true,
                    },
                ),
            ],
            &[rest[0].subscriber.id],
            at(7, 2),
        )
        .unwrap();
    assert_eq!(moved, vec![true]);
    assert_eq!(
        s.ledger_counts(date()).unwrap(),
        LedgerCounts {
            pending: 1,
            sending: 1,
            sent: 1,
            failed: 1
        }
    );
    let bounced = s.subscriber_by_id(ids[1]).unwrap().unwrap();
    assert_eq!(bounced.status, SubscriberStatus::Bounced);
    // A row in `sending` is never read ahead; a sent one neither.
    let again = s.ledger_next(date(), i64::MIN, 10).unwrap();
    assert_eq!(
        again.iter().map(|d| d.subscriber.id).collect::<Vec<_>>(),
        vec![rest[1].subscriber.id]
    );
}

pub(crate) fn reading_ahead_drops_rows_of_subscribers_gone_meanwhile_and_still_fills_the_batch(
    db: &dyn Db,
) {
    let s = enqueued(db, 6);
    let all = s.ledger_next(date(), i64::MIN, 6).unwrap();
    for d in &all[..3] {
        s.set_status(
            d.subscriber.id,
            SubscriberStatus::Unsubscribed,
            "test",
            at(7, 0),
        )
        .unwrap();
    }
    let ahead = s.ledger_next(date(), i64::MIN, 3).unwrap();
    assert_eq!(
        ahead.iter().map(|d| d.subscriber.id).collect::<Vec<_>>(),
        all[3..].iter().map(|d| d.subscriber.id).collect::<Vec<_>>()
    );
    assert_eq!(s.ledger_counts(date()).unwrap().pending, 3);
}

pub(crate) fn preferences_replace_language_and_sections_and_leave_the_status_alone(db: &dyn Db) {
    let s = db.open();
    s.upsert_subscriber(&NewSubscriber {
        locale: Some(Locale::Fr),
        categories: vec!["Monde".into(), "Sport".into()],
        ..active("a@example.com")
    })
    .unwrap();
    s.upsert_subscriber(&new_sub("gone@example.com", SubscriberStatus::Unsubscribed))
        .unwrap();
    let a = s
        .subscriber_by_email(&SubscriberEmail::parse("a@example.com").unwrap())
        .unwrap()
        .unwrap();
    assert!(s
        .set_preferences(a.id, Some(Locale::En), &["Culture".into()], at(8, 0))
        .unwrap());
    let a2 = s.subscriber_by_id(a.id).unwrap().unwrap();
    assert_eq!(
        (a2.locale, a2.categories.clone()),
        (Some(Locale::En), vec!["Culture".to_string()])
    );
    // No section: no preference (an import would have kept the old ones).
    s.set_preferences(a.id, Some(Locale::En), &[], at(8, 1))
        .unwrap();
    assert!(s
        .subscriber_by_id(a.id)
        .unwrap()
        .unwrap()
        .categories
        .is_empty());
    let g = s
        .subscriber_by_email(&SubscriberEmail::parse("gone@example.com").unwrap())
        .unwrap()
        .unwrap();
    s.set_preferences(g.id, Some(Locale::En), &[], at(8, 2))
        .unwrap();
    assert_eq!(
        s.subscriber_by_id(g.id).unwrap().unwrap().status,
        SubscriberStatus::Unsubscribed
    );
    assert!(!s.set_preferences(999_999, None, &[], at(8, 3)).unwrap());
}

pub(crate) fn a_hard_bounce_marks_the_subscriber_bounced_and_out_of_the_next_issue(db: &dyn Db) {
    let s = enqueued(db, 2);
    let c = s.ledger_claim(date(), 10, false).unwrap();
    let id = c[0].subscriber.id;
    s.ledger_record(
        date(),
        &[(
            id,
            DeliveryOutcome::Failed {
                error: "550 5.1.1".into(),
                hard_bounce: true,
            },
        )],
        at(7, 0),
    )
    .unwrap();
    assert_eq!(
        s.subscriber_by_id(id).unwrap().unwrap().status,
        SubscriberStatus::Bounced
    );
    // A later import does not bring the bounced address back.
    s.upsert_subscriber(&active("r0@example.com")).unwrap();
    assert_eq!(
        s.subscriber_by_id(id).unwrap().unwrap().status,
        SubscriberStatus::Bounced
    );
    assert_eq!(
        s.ledger_enqueue(date().succ_opt().unwrap(), None).unwrap(),
        1
    );
}

pub(crate) fn rows_in_flight_when_a_process_died_come_back_once_as_in_doubt(db: &dyn Db) {
    {
        let s = db.open();
        add_many(&s, 5);
        s.ledger_enqueue(date(), None).unwrap();
        assert_eq!(s.ledger_claim(date(), 2, false).unwrap().len(), 2);
        // The process "dies" here with two rows in `sending`.
    }
    let s = db.open();
    let c = s.ledger_claim(date(), 3, true).unwrap();
    assert_eq!(c.len(), 3);
    assert!(c[0].in_doubt && c[1].in_doubt && !c[2].in_doubt);
    let rest = s.ledger_claim(date(), 10, false).unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|d| !d.in_doubt));
    let all: HashSet<i64> = c.iter().chain(&rest).map(|d| d.subscriber.id).collect();
    assert_eq!(all.len(), 5);
}

pub(crate) fn a_subscriber_who_unsubscribes_mid_send_is_dropped_from_the_ledger(db: &dyn Db) {
    let s = enqueued(db, 3);
    let gone = sub_of(&s, "r1@example.com");
    s.set_status(
        gone.id,
        SubscriberStatus::Unsubscribed,
        "one-click",
        at(7, 0),
    )
    .unwrap();
    let c = s.ledger_claim(date(), 10, false).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c.iter().all(|d| d.subscriber.id != gone.id));
    assert_eq!(
        s.ledger_counts(date()).unwrap(),
        LedgerCounts {
            sending: 2,
            ..Default::default()
        }
    );
}

pub(crate) fn two_connections_claiming_at_once_never_get_the_same_row(db: &dyn Db) {
    let seed = db.open();
    add_many(&seed, 600);
    seed.ledger_enqueue(date(), None).unwrap();
    let a = db.open();
    let b = db.open();
    let handles: Vec<_> = [a, b]
        .into_iter()
        .flat_map(|s| [s.clone(), s])
        .map(|s| {
            std::thread::spawn(move || {
                let mut got = vec![];
                loop {
                    let c = s.ledger_claim(date(), 7, false).unwrap();
                    if c.is_empty() {
                        return got;
                    }
                    got.extend(c.into_iter().map(|d| d.subscriber.id));
                }
            })
        })
        .collect();
    let mut all = vec![];
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 600);
    assert_eq!(unique.len(), 600);
    assert_eq!(seed.ledger_counts(date()).unwrap().sending, 600);
}

pub(crate) fn senders_claim_apart_and_mark_only_the_rows_they_hold(db: &dyn Db) {
    let a = enqueued(db, 10);
    let b = db.open();
    let (ha, hb) = (Holder::new("send-a"), Holder::new("send-b"));
    let got_a = ids_of(&a.ledger_claim_for(date(), &ha, 4).unwrap());
    let got_b = ids_of(&b.ledger_claim_for(date(), &hb, 4).unwrap());
    assert_eq!(got_a.len(), 4);
    assert_eq!(got_b.len(), 4);
    assert!(
        got_a.iter().all(|id| !got_b.contains(id)),
        "{got_a:?} {got_b:?}"
    );
    assert!(got_a.windows(2).all(|w| w[0] < w[1]), "in subscriber order");
    // Claimed rows stay pending until their mark.
    assert_eq!(a.ledger_counts(date()).unwrap().pending, 10);
    // B cannot mark A's rows; A can.
    assert_eq!(
        b.ledger_record_and_mark(date(), &hb, &[], &got_a[..1], at(7, 0))
            .unwrap(),
        vec![false]
    );
    assert_eq!(
        a.ledger_record_and_mark(date(), &ha, &[], &got_a[..2], at(7, 0))
            .unwrap(),
        vec![true, true]
    );
    assert_eq!(
        db.text(&format!(
            "SELECT holder FROM deliveries WHERE subscriber_id = {}",
            got_a[0]
        ))
        .as_deref(),
        Some("send-a")
    );
    // Two rows are left free: fewer than asked is the end.
    assert_eq!(b.ledger_claim_for(date(), &hb, 10).unwrap().len(), 2);
    assert!(a.ledger_claim_for(date(), &ha, 10).unwrap().is_empty());
    // A releases what it claimed and did not mark: B may take it, not A's sending rows.
    a.ledger_release(date(), &ha).unwrap();
    let freed = ids_of(&b.ledger_claim_for(date(), &hb, 10).unwrap());
    assert_eq!(freed, got_a[2..].to_vec());
    assert_eq!(a.ledger_counts(date()).unwrap().sending, 2);
    // Who holds and sent what, by sender (`digestif ledger`).
    a.ledger_record(date(), &[sent(got_a[0])], at(7, 1))
        .unwrap();
    let rows = |pending, sending, sent| LedgerCounts {
        pending,
        sending,
        sent,
        failed: 0,
    };
    assert_eq!(
        b.ledger_by_sender(date()).unwrap(),
        vec![
            SenderRows {
                holder: ha,
                rows: rows(0, 1, 1)
            },
            SenderRows {
                holder: hb,
                rows: rows(8, 0, 0)
            },
        ]
    );
}

pub(crate) fn senders_claiming_at_once_never_get_the_same_row(db: &dyn Db) {
    let seed = enqueued(db, 600);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = db.open();
            std::thread::spawn(move || {
                let me = Holder::new(format!("send-{i}"));
                let mut got = vec![];
                loop {
                    let c = ids_of(&s.ledger_claim_for(date(), &me, 7).unwrap());
                    if c.is_empty() {
                        return got;
                    }
                    // Each marks what it claimed, as a send does.
                    let moved = s
                        .ledger_record_and_mark(date(), &me, &[], &c, at(7, 0))
                        .unwrap();
                    assert!(moved.iter().all(|m| *m));
                    got.extend(c);
                }
            })
        })
        .collect();
    let mut all = vec![];
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let unique: HashSet<_> = all.iter().copied().collect();
    assert_eq!((all.len(), unique.len()), (600, 600));
    assert_eq!(seed.ledger_counts(date()).unwrap().sending, 600);
}

pub(crate) fn the_rows_of_a_sender_gone_silent_are_taken_over_in_doubt_or_freed(db: &dyn Db) {
    let a = enqueued(db, 6);
    let b = db.open();
    let (ha, hb) = (Holder::new("send-a"), Holder::new("send-b"));
    a.sender_seen(date(), &ha, at(7, 0)).unwrap();
    b.sender_seen(date(), &hb, at(7, 0)).unwrap();
    b.sender_seen(date(), &hb, at(7, 1)).unwrap();
    let seen = b.senders(date()).unwrap();
    assert_eq!(
        seen.iter()
            .map(|x| (x.holder.as_str(), x.last_seen))
            .collect::<Vec<_>>(),
        vec![("send-a", at(7, 0)), ("send-b", at(7, 1))]
    );
    let claimed = ids_of(&a.ledger_claim_for(date(), &ha, 3).unwrap());
    a.ledger_record_and_mark(date(), &ha, &[], &claimed[..2], at(7, 0))
        .unwrap();
    // A still beats: nothing is taken from it.
    let nothing = b.ledger_take_over(date(), &hb, &[], at(7, 1)).unwrap();
    assert_eq!(
        nothing,
        TakeOver {
            in_doubt: vec![],
            released: 0,
            held_elsewhere: 3
        }
    );
    // A is gone: its two rows in flight are B's, in doubt; its claimed row is free.
    let found = b
        .ledger_take_over(date(), &hb, std::slice::from_ref(&ha), at(7, 2))
        .unwrap();
    assert_eq!(ids_of(&found.in_doubt), claimed[..2].to_vec());
    assert!(found.in_doubt.iter().all(|d| d.in_doubt));
    assert_eq!((found.released, found.held_elsewhere), (1, 0));
    let left: Vec<Holder> = b
        .senders(date())
        .unwrap()
        .into_iter()
        .map(|x| x.holder)
        .collect();
    assert_eq!(
        left,
        vec![hb.clone()],
        "the gone sender's heartbeat is deleted"
    );
    // Taken once: another look finds nothing more.
    assert!(b
        .ledger_take_over(date(), &hb, &[], at(7, 3))
        .unwrap()
        .in_doubt
        .is_empty());
    // B records the rows it resent; A's late mark of its freed row is refused
    // once B holds it.
    let rest = ids_of(&b.ledger_claim_for(date(), &hb, 10).unwrap());
    assert_eq!(rest.len(), 4, "the freed row and the three never claimed");
    assert!(rest.contains(&claimed[2]));
    assert_eq!(
        a.ledger_record_and_mark(date(), &ha, &[], &claimed[2..], at(7, 3))
            .unwrap(),
        vec![false]
    );
    b.ledger_record(date(), &[sent(claimed[0]), sent(claimed[1])], at(7, 4))
        .unwrap();
    assert_eq!(b.ledger_counts(date()).unwrap().sent, 2);
}

pub(crate) fn rows_a_sender_left_in_sending_go_to_the_next_sender_in_doubt(db: &dyn Db) {
    let a = enqueued(db, 3);
    let (ha, hb) = (Holder::new("send-a"), Holder::new("send-b"));
    a.sender_seen(date(), &ha, at(7, 0)).unwrap();
    let claimed = ids_of(&a.ledger_claim_for(date(), &ha, 3).unwrap());
    a.ledger_record_and_mark(date(), &ha, &[], &claimed[..1], at(7, 0))
        .unwrap();
    a.ledger_release(date(), &ha).unwrap();
    a.sender_left(&ha).unwrap();
    assert!(a.senders(date()).unwrap().is_empty());
    let b = db.open();
    let found = b.ledger_take_over(date(), &hb, &[], at(7, 1)).unwrap();
    assert_eq!(ids_of(&found.in_doubt), claimed[..1].to_vec());
    assert_eq!(found.held_elsewhere, 0);
    assert_eq!(b.ledger_claim_for(date(), &hb, 10).unwrap().len(), 2);
}

pub(crate) fn a_lease_is_exclusive_until_it_expires(db: &dyn Db) {
    let a = db.open();
    let b = db.open();
    assert!(lease(&a, "issue:2026-03-02", "a", at(7, 0), at(7, 10)));
    assert!(!lease(&b, "issue:2026-03-02", "b", at(7, 5), at(7, 15)));
    // The holder renews.
    assert!(lease(&a, "issue:2026-03-02", "a", at(7, 5), at(7, 20)));
    assert!(!lease(&b, "issue:2026-03-02", "b", at(7, 15), at(7, 25)));
    // Another name is another lease.
    assert!(lease(&b, "issue:2026-03-03", "b", at(7, 15), at(7, 25)));
    // Expired: anyone takes it.
    assert!(lease(&b, "issue:2026-03-02", "b", at(7, 20), at(7, 30)));
    assert!(!lease(&a, "issue:2026-03-02", "a", at(7, 21), at(7, 31)));
    // Releasing someone else's lease does nothing; releasing one's own frees it.
    a.release_lease("issue:2026-03-02", "a").unwrap();
    assert!(!lease(&a, "issue:2026-03-02", "a", at(7, 22), at(7, 32)));
    b.release_lease("issue:2026-03-02", "b").unwrap();
    assert!(lease(&a, "issue:2026-03-02", "a", at(7, 22), at(7, 32)));
}

pub(crate) fn a_signup_waits_apart_until_it_is_taken_once(db: &dyn Db) {
    let s = db.open();
    let mut sub = new_sub("New@Example.org", SubscriberStatus::Pending);
    sub.locale = Some(Locale::En);
    sub.categories = vec!["tech".into()];
    sub.timezone = Some(chrono_tz::Europe::London);
    let signup = PendingSignup {
        subscriber: sub.clone(),
        requested_at: at(9, 0),
    };
    s.put_signup(&signup).unwrap();
    s.put_signup(&PendingSignup {
        requested_at: at(9, 5),
        ..signup.clone()
    })
    .unwrap();
    assert!(s.subscriber_by_email(&sub.email).unwrap().is_none());
    // Whatever the case, one address: the confirmation finds the sign-up.
    let taken = s.take_signup(&email("new@EXAMPLE.org")).unwrap().unwrap();
    assert_eq!(taken.subscriber, sub);
    assert_eq!(taken.requested_at, at(9, 5));
    assert!(s.take_signup(&sub.email).unwrap().is_none());
}

pub(crate) fn the_last_run_is_the_latest_finished(db: &dyn Db) {
    let s = db.open();
    assert!(s.last_run().unwrap().is_none());
    s.ping().unwrap();
    let run = RunRecord {
        date: date(),
        started_at: at(7, 0),
        finished_at: at(7, 3),
        status: RunStatus::Ok,
        sent: 10,
        failed: 1,
        retried: 2,
        in_doubt: 0,
        message: "done".into(),
    };
    s.record_run(&run).unwrap();
    let older = RunRecord {
        finished_at: at(6, 0),
        status: RunStatus::Failed(crate::store::FailedStep::Build),
        ..run.clone()
    };
    s.record_run(&older).unwrap();
    assert_eq!(s.last_run().unwrap(), Some(run));
}

pub(crate) fn a_sent_message_is_found_by_its_message_id_and_address_together(db: &dyn Db) {
    let s = enqueued(db, 2);
    let claimed = s.ledger_claim(date(), 10, false).unwrap();
    let ids: Vec<i64> = claimed.iter().map(|d| d.subscriber.id).collect();
    let sent = |id: &str| DeliveryOutcome::Sent {
        message_id: id.into(),
    };
    s.ledger_record(
        date(),
        &[
            (ids[0], sent("a1@news.example.com")),
            (ids[1], sent("<b2@x>")),
        ],
        at(7, 1),
    )
    .unwrap();
    let found = |mid: &str, addr: &str| s.sent_message(mid, &email(addr)).unwrap();
    assert_eq!(
        found("a1@news.example.com", "r0@example.com"),
        Some((ids[0], date()))
    );
    assert_eq!(
        found("<a1@news.example.com>", "R0@EXAMPLE.com"),
        Some((ids[0], date()))
    );
    assert_eq!(found("b2@x", "r1@example.com"), Some((ids[1], date())));
    // The right message to the wrong address, or the reverse, is no match.
    assert_eq!(found("a1@news.example.com", "r1@example.com"), None);
    assert_eq!(found("nope@news.example.com", "r0@example.com"), None);
    assert_eq!(found("<>", "r0@example.com"), None);
}
