//! The store suite's cases for upserting many subscribers at once
//! ([`crate::store::Store::upsert_many`]): whatever a backend does per batch, each
//! row's outcome and what is stored are those of upserting the rows one at a time.

use std::sync::Arc;

use super::{active, at, email, new_sub, sub_of, Db};
use crate::domain::{Locale, SubscriberStatus};
use crate::store::pg::upsert::CHUNK;
use crate::store::{Backend, NewSubscriber, Upserted};

/// What is stored for `addr` (its columns an upsert sets, `-` for NULL), or None.
fn stored(db: &dyn Db, addr: &str) -> Option<String> {
    db.text(&format!(
        "SELECT (SELECT COALESCE(name, '-') || '|' || COALESCE(locale, '-') || '|' || categories
                || '|' || COALESCE(timezone, '-') || '|' || status
                || '|' || COALESCE(status_reason, '-')
                || '|' || CASE WHEN unsubscribed_at IS NULL THEN 'still' ELSE 'left' END
         FROM subscribers WHERE email_key = '{}')",
        email(addr).key()
    ))
}

fn named(addr: &str, name: &str) -> NewSubscriber {
    NewSubscriber {
        name: Some(name.into()),
        ..active(addr)
    }
}

fn unsubscribed(addr: &str) -> NewSubscriber {
    new_sub(addr, SubscriberStatus::Unsubscribed)
}

/// Rows of one address given again and again, each changing something or nothing,
/// as `user@DOMAIN`.
fn one_address_again_and_again(domain: &str) -> Vec<NewSubscriber> {
    let a = |local: &str| format!("{local}@{domain}");
    let mut fr = named(&a("Ann"), "Ann");
    fr.locale = Some(Locale::Fr);
    let mut sections = active(&a("ann"));
    sections.categories = vec!["Monde".into(), "Sport".into()];
    sections.timezone = Some(chrono_tz::Europe::Paris);
    vec![
        active(&a("Ann")),
        active(&a("ANN")),
        fr,
        named(&a("ann"), "Ann"),
        sections,
        new_sub(&a("ann"), SubscriberStatus::Pending),
        active(&a("ann")),
        unsubscribed(&a("ann")),
        active(&a("ann")),
        named(&a("ann"), "Anne"),
    ]
}

pub(crate) fn a_batch_giving_one_address_many_times_does_what_one_row_at_a_time_does(db: &dyn Db) {
    let s = db.open();
    let batch = s
        .upsert_many(&one_address_again_and_again("batch.example.com"))
        .unwrap();
    use Upserted::*;
    assert_eq!(
        batch,
        vec![
            Inserted, Unchanged, Updated, Unchanged, Updated, Updated, Updated, Updated, Unchanged,
            Updated
        ]
    );
    let mut one_by_one = Vec::new();
    for row in one_address_again_and_again("rows.example.com") {
        one_by_one.push(s.upsert_subscriber(&row).unwrap());
    }
    assert_eq!(batch, one_by_one);
    let (b, r) = (
        stored(db, "ann@batch.example.com"),
        stored(db, "ann@rows.example.com"),
    );
    assert_eq!(
        b.as_deref(),
        Some("Anne|fr|Monde;Sport|Europe/Paris|unsubscribed|updated|left")
    );
    assert_eq!(b, r);
    assert_eq!(
        sub_of(&s, "ann@batch.example.com").email.as_str(),
        "Ann@batch.example.com",
        "the spelling first given is kept"
    );
    assert_eq!(
        s.count_by_status().unwrap(),
        vec![(SubscriberStatus::Unsubscribed, 2)]
    );
}

pub(crate) fn a_batch_mixing_new_stored_and_suppressed_addresses_gives_each_row_its_outcome(
    db: &dyn Db,
) {
    let s = db.open();
    s.upsert_many(&[
        active("kept@example.com"),
        active("left@example.com"),
        active("removed@example.com"),
        active("forgotten@example.com"),
        active("gone@example.com"),
    ])
    .unwrap();
    let left = sub_of(&s, "left@example.com").id;
    s.set_status(left, SubscriberStatus::Unsubscribed, "one-click", at(8, 0))
        .unwrap();
    let gone = sub_of(&s, "gone@example.com").id;
    s.set_status(gone, SubscriberStatus::Unsubscribed, "one-click", at(8, 0))
        .unwrap();
    s.remove_subscriber(&email("gone@example.com")).unwrap();
    s.remove_subscriber(&email("removed@example.com")).unwrap();
    s.forget_subscriber(&email("forgotten@example.com"))
        .unwrap();
    let mut new_fr = active("new@example.com");
    new_fr.locale = Some(Locale::Fr);
    let outs = s
        .upsert_many(&[
            active("new@example.com"),
            named("kept@example.com", "Kim"),
            active("Removed@example.com"),
            active("left@example.com"),
            unsubscribed("new-left@example.com"),
            named("kept@example.com", "Kim"),
            named("gone@example.com", "Gail"),
            active("forgotten@example.com"),
            named("LEFT@example.com", "Lee"),
            new_fr,
            active("removed@example.com"),
        ])
        .unwrap();
    use Upserted::*;
    assert_eq!(
        outs,
        vec![
            Inserted, Updated, Suppressed, Unchanged, Inserted, Unchanged, Suppressed, Suppressed,
            Updated, Updated, Suppressed
        ]
    );
    for addr in [
        "removed@example.com",
        "gone@example.com",
        "forgotten@example.com",
    ] {
        assert_eq!(stored(db, addr), None, "{addr} stays out");
    }
    assert_eq!(
        stored(db, "kept@example.com").as_deref(),
        Some("Kim|-||-|active|added|still")
    );
    assert_eq!(
        stored(db, "left@example.com").as_deref(),
        Some("Lee|-||-|unsubscribed|one-click|left"),
        "an update that leaves the status alone keeps its reason"
    );
    assert_eq!(
        stored(db, "new@example.com").as_deref(),
        Some("-|fr||-|active|added|still")
    );
    assert_eq!(
        stored(db, "new-left@example.com").as_deref(),
        Some("-|-||-|unsubscribed|added|left")
    );
}

/// Rows of the large batch that give again the address of an earlier row `j`
/// (`true`: with a name), in the same chunk or an earlier one.
const REPEATS: &[(usize, usize, bool)] = &[
    (20, 10, true),
    (CHUNK + 3, 1, false),
    (CHUNK + 4, 2, true),
    (CHUNK + 8, 998, false),
    (2 * CHUNK + 5, CHUNK + 11, true),
    (2 * CHUNK + 6, 5, false),
    (2 * CHUNK + 7, 12, true),
];

fn large_row(i: usize) -> NewSubscriber {
    match REPEATS.iter().find(|r| r.0 == i) {
        Some(&(_, j, true)) => named(&format!("r{j}@example.com"), "again"),
        Some(&(_, j, false)) => large_row(j),
        None => active(&format!("r{i}@example.com")),
    }
}

/// Stored before the large batch: one address in 7 (half of them named).
fn stored_before(i: usize) -> bool {
    i % 7 == 5
}

/// Removed before the large batch: one address in 1 000.
fn removed_before(i: usize) -> bool {
    i % 1_000 == 998 && !stored_before(i)
}

pub(crate) fn a_batch_larger_than_a_chunk_gives_outcomes_in_input_order_and_ids_in_first_seen_order(
    db: &dyn Db,
) {
    let s: Arc<dyn Backend> = db.open();
    let n = 2 * CHUNK + 17;
    let before: Vec<NewSubscriber> = (0..n)
        .filter(|&i| stored_before(i))
        .map(|i| match i % 2 {
            0 => named(&format!("r{i}@example.com"), "before"),
            _ => active(&format!("r{i}@example.com")),
        })
        .collect();
    s.upsert_many(&before).unwrap();
    for i in (0..n).filter(|&i| removed_before(i)) {
        let addr = format!("r{i}@example.com");
        s.upsert_subscriber(&active(&addr)).unwrap();
        s.remove_subscriber(&email(&addr)).unwrap();
    }
    let rows: Vec<NewSubscriber> = (0..n).map(large_row).collect();
    let outs = s.upsert_many(&rows).unwrap();
    assert_eq!(outs.len(), n);
    let first = |i: usize| {
        if removed_before(i) {
            Upserted::Suppressed
        } else if stored_before(i) {
            Upserted::Unchanged
        } else {
            Upserted::Inserted
        }
    };
    let expected = |i: usize| match REPEATS.iter().find(|r| r.0 == i) {
        Some(&(_, j, _)) if first(j) == Upserted::Suppressed => Upserted::Suppressed,
        Some(&(_, _, renamed)) if renamed => Upserted::Updated,
        Some(_) => Upserted::Unchanged,
        None => first(i),
    };
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(*out, expected(i), "row {i} ({})", rows[i].email);
    }
    // Ids follow the rows' order, as one insert after the other gives them.
    let mut ids_order = Vec::new();
    let mut after = 0;
    loop {
        let page = s.subscribers_page(None, after, 4_000).unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        ids_order.extend(page.into_iter().map(|x| x.email.to_string()));
    }
    let inserted: Vec<String> = (0..n)
        .filter(|&i| expected(i) == Upserted::Inserted)
        .map(|i| rows[i].email.to_string())
        .collect();
    assert_eq!(ids_order.len(), before.len() + inserted.len());
    assert_eq!(ids_order[before.len()..], inserted[..]);
    for (j, name) in [(2, "again"), (12, "again"), (5, "-"), (1, "-")] {
        assert_eq!(
            stored(db, &format!("r{j}@example.com")).as_deref(),
            Some(format!("{name}|-||-|active|added|still").as_str()),
            "r{j}"
        );
    }
}
