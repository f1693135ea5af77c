//! The store suite's cases for the frozen issue ([`crate::store::IssueStore`]).

use std::sync::Arc;

use super::{active, at, date, email, Db};
use crate::domain::{Locale, SubscriberStatus};
use crate::store::{Backend, Freeze, FrozenIssue, NewSubscriber, StoreError};

fn issue(tag: &str) -> FrozenIssue {
    FrozenIssue {
        date: date(),
        digest: format!("{{\"tag\": \"{tag}\"}}"),
        html: format!("<p>{tag} — é</p>"),
        text: format!("{tag}\n"),
        frozen_at: at(6, 0),
    }
}

pub(crate) fn the_first_issue_frozen_is_the_one_every_later_process_gets(db: &dyn Db) {
    let (a, b) = (db.open(), db.open());
    let issues = |s: &Arc<dyn Backend>| s.issues().frozen_issue(date());
    assert_eq!(issues(&a).unwrap(), None);
    let first = a
        .issues()
        .freeze_issue(&issue("first"), Freeze::KeepFirst)
        .unwrap();
    assert_eq!(first, issue("first"));
    // Another process that built the issue too gets the first one back.
    let second = b
        .issues()
        .freeze_issue(&issue("second"), Freeze::KeepFirst)
        .unwrap();
    assert_eq!(second, issue("first"));
    assert_eq!(issues(&b).unwrap(), Some(issue("first")));
    assert_eq!(
        db.text("SELECT html FROM issues").as_deref(),
        Some("<p>first — é</p>")
    );
}

pub(crate) fn processes_freezing_one_issue_at_once_all_get_the_same(db: &dyn Db) {
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let s = db.open();
            std::thread::spawn(move || {
                s.issues()
                    .freeze_issue(&issue(&format!("p{i}")), Freeze::KeepFirst)
                    .unwrap()
            })
        })
        .collect();
    let kept: Vec<FrozenIssue> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(kept.iter().all(|k| *k == kept[0]), "{kept:?}");
    assert_eq!(
        db.open().issues().frozen_issue(date()).unwrap(),
        Some(kept[0].clone())
    );
}

pub(crate) fn a_forced_rebuild_replaces_the_issue_and_drops_its_variants(db: &dyn Db) {
    let s = db.open();
    let issues = s.issues();
    issues
        .freeze_issue(&issue("old"), Freeze::KeepFirst)
        .unwrap();
    issues.freeze_variant(date(), "fr:", "old variant").unwrap();
    let kept = issues.freeze_issue(&issue("new"), Freeze::Replace).unwrap();
    assert_eq!(kept, issue("new"));
    assert_eq!(
        issues.freeze_variant(date(), "fr:", "new variant").unwrap(),
        "new variant"
    );
}

pub(crate) fn the_first_variant_kept_is_the_one_every_sender_gets(db: &dyn Db) {
    let (a, b) = (db.open(), db.open());
    let err = a.issues().freeze_variant(date(), "fr:", "x").unwrap_err();
    assert!(
        matches!(err, StoreError::NotFrozen { date: d, ref variant } if d == date() && variant == "fr:"),
        "{err}"
    );
    a.issues()
        .freeze_issue(&issue("i"), Freeze::KeepFirst)
        .unwrap();
    let va = a.issues();
    let vb = b.issues();
    assert_eq!(vb.frozen_variant(date(), "fr:").unwrap(), None);
    assert_eq!(
        va.freeze_variant(date(), "fr:", "from a").unwrap(),
        "from a"
    );
    // Read as kept, without writing (a preview).
    assert_eq!(
        vb.frozen_variant(date(), "fr:").unwrap().as_deref(),
        Some("from a")
    );
    assert_eq!(
        vb.freeze_variant(date(), "fr:", "from b").unwrap(),
        "from a"
    );
    assert_eq!(
        vb.freeze_variant(date(), "en:Sport", "from b").unwrap(),
        "from b"
    );
    assert_eq!(
        va.freeze_variant(date(), "en:Sport", "from a").unwrap(),
        "from b"
    );
}

pub(crate) fn frozen_dates_come_newest_first(db: &dyn Db) {
    let s = db.open();
    let issues = s.issues();
    assert!(issues.frozen_dates().unwrap().is_empty());
    for days in [0, 2, 1] {
        let mut i = issue("d");
        i.date = date() + chrono::Duration::days(days);
        issues.freeze_issue(&i, Freeze::KeepFirst).unwrap();
    }
    let d = |n| date() + chrono::Duration::days(n);
    assert_eq!(issues.frozen_dates().unwrap(), vec![d(2), d(1), d(0)]);
}

pub(crate) fn the_variants_in_use_are_each_language_and_sections_of_active_readers_once(
    db: &dyn Db,
) {
    let s = db.open();
    let reader = |addr: &str, locale: Option<Locale>, cats: &[&str]| NewSubscriber {
        locale,
        categories: cats.iter().map(|c| c.to_string()).collect(),
        ..active(addr)
    };
    s.upsert_many(&[
        reader("a@example.com", None, &[]),
        reader("b@example.com", None, &[]),
        reader("c@example.com", Some(Locale::En), &["Sport", "Monde"]),
        reader("d@example.com", Some(Locale::En), &["Sport", "Monde"]),
        reader("e@example.com", Some(Locale::Fr), &[]),
        NewSubscriber {
            status: SubscriberStatus::Unsubscribed,
            ..reader("f@example.com", Some(Locale::En), &["Culture"])
        },
    ])
    .unwrap();
    assert!(s
        .subscriber_by_email(&email("f@example.com"))
        .unwrap()
        .is_some());
    let mut got = s.issues().variants_in_use().unwrap();
    got.sort_by_key(|(l, c)| (l.map(|l| l.code()), c.clone()));
    assert_eq!(
        got,
        vec![
            (None, vec![]),
            (
                Some(Locale::En),
                vec!["Sport".to_string(), "Monde".to_string()]
            ),
            (Some(Locale::Fr), vec![]),
        ]
    );
}
