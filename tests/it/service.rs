//! End-to-end tests of the service: a real HTTP client against the router on a
//! random port, a real SQLite file, a real SMTP server (aiosmtpd), and the
//! `digestif serve` binary itself for the multi-process and signal cases.

use crate::on_each_backend;
use crate::support;
use crate::support::app;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use app::{App, Db, Mail};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use digestif::config::Secret;
use digestif::deliver::token;
use digestif::domain::{SubscriberEmail, SubscriberStatus};
use digestif::pipeline::SendError;
use digestif::schedule::{DueFilter, IssuePipeline, Pass, PassReport, RunOutcome, Scheduler};
use digestif::store::{FailedStep, Ledger, NewSubscriber, PartialReason, RunStatus, Runs, Store};
use futures::future::BoxFuture;
use support::site::subscriber;
use support::SmtpServer;

// What a visitor does works the same on either database, against any instance.
on_each_backend!(
    sign_up_confirm_scheduled_send_one_click_unsubscribe_and_the_next_send_excludes_them,
    a_get_on_the_unsubscribe_link_shows_one_button_and_changes_nothing,
    the_unsubscribe_page_speaks_the_subscribers_language,
    the_unsubscribe_page_leads_to_preferences_that_change_language_and_sections,
    a_forged_unsubscribe_token_gets_a_400_page_and_changes_nothing,
    one_click_unsubscribe_is_idempotent_and_answers_200_without_redirect,
    sign_up_answers_the_same_whether_the_address_is_known_or_not,
    a_bad_address_is_refused_with_the_form_shown_again,
    too_many_sign_ups_from_one_client_get_a_429_page,
    an_unsubscribed_reader_who_confirms_a_new_sign_up_is_active_again,
    an_expired_or_forged_confirmation_link_is_refused,
    the_archive_lists_past_issues_newest_first_without_personal_data,
    healthz_reports_the_store_and_the_last_run_and_metrics_count_subscribers,
    an_unknown_page_is_a_404_page_in_the_visitors_language,
);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A GET on `path` of the running service, redirects not followed.
async fn get(app: &App, path: &str) -> reqwest::Response {
    client().get(app.url(path)).send().await.unwrap()
}

/// `/healthz`, parsed.
async fn healthz(app: &App) -> serde_json::Value {
    serde_json::from_str(&get(app, "/healthz").await.text().await.unwrap()).unwrap()
}

fn email(s: &str) -> SubscriberEmail {
    SubscriberEmail::parse(s).unwrap()
}

fn add(store: &dyn Store, addr: &str, status: SubscriberStatus) -> i64 {
    store
        .upsert_subscriber(&NewSubscriber {
            status,
            ..subscriber(addr, None)
        })
        .unwrap();
    store.subscriber_by_email(&email(addr)).unwrap().unwrap().id
}

/// Asserts the reader's status in the app's store.
#[track_caller]
fn assert_status(app: &App, addr: &str, want: SubscriberStatus) {
    assert_eq!(status_of(app, addr), want);
}

/// Adds an active reader to the app's store; their id.
fn add_active(app: &App, addr: &str) -> i64 {
    add(app.store.as_ref(), addr, SubscriberStatus::Active)
}

fn status_of(app: &App, addr: &str) -> SubscriberStatus {
    app.store
        .subscriber_by_email(&email(addr))
        .unwrap()
        .unwrap()
        .status
}

fn unsub_token(app: &App, id: i64) -> String {
    let key = app.store.subscriber_by_id(id).unwrap().unwrap().link_key;
    token::unsubscribe_token(&Secret::new(app::SECRET), &app.cfg.list_id(), &key)
}

/// The reader's unsubscribe link on the running service.
fn unsub_url(app: &App, id: i64) -> String {
    app.url(&format!("/unsubscribe?token={}", unsub_token(app, id)))
}

/// Waits (bounded) for `f` to hold.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + StdDuration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
}

fn paris_date(now: DateTime<Utc>) -> NaiveDate {
    now.with_timezone(&chrono_tz::Europe::Paris).date_naive()
}

// ------------------------------------------------------------------ the whole flow

async fn sign_up_confirm_scheduled_send_one_click_unsubscribe_and_the_next_send_excludes_them(
    db: Db,
) {
    let smtp = SmtpServer::start(&[]);
    let app = app::start_on(db, Mail::Smtp(smtp.port), "07:00", "").await;
    let http = client();

    // Sign up through the form.
    let res = http
        .post(app.url("/subscribe"))
        .form(&[
            ("email", "claire@example.org"),
            ("name", "Claire"),
            ("locale", "fr"),
            ("categories", "Économie"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Vérifiez votre boîte"));
    // Double opt-in: not a subscriber yet.
    assert!(
        app.store
            .subscriber_by_email(&email("claire@example.org"))
            .unwrap()
            .is_none()
            || status_of(&app, "claire@example.org") != SubscriberStatus::Active
    );

    // The confirmation arrives at the SMTP server.
    smtp.wait_for(1, StdDuration::from_secs(20));
    let mail = &smtp.messages()[0];
    assert_eq!(mail.rcpt(), "claire@example.org");
    let link = app::link_in(&mail.raw, "confirm");
    assert!(link.starts_with(&app.url("/confirm?token=")), "{link}");

    // The link shows a page with a button; GET alone activates nothing.
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("Confirmer mon inscription"), "{body}");
    assert!(
        !body.contains("claire@example.org"),
        "the page masks the address"
    );
    let tok = token_of(&link);
    let res = post_confirm(&app, &tok).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("Inscription confirmée"));
    assert_status(&app, "claire@example.org", SubscriberStatus::Active);
    let claire = app
        .store
        .subscriber_by_email(&email("claire@example.org"))
        .unwrap()
        .unwrap();
    assert_eq!(claire.name.as_deref(), Some("Claire"));
    assert_eq!(claire.categories, vec!["Économie".to_string()]);

    // A scheduled send a few seconds away: the clock says 06:59:57 Paris time.
    let d1 = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    app::archive(&app, d1);
    let sched = Arc::new(live_scheduler(&app));
    let send_at = digestif::domain::local_instant(
        d1,
        app.cfg.newsletter.send_time.0,
        chrono_tz::Europe::Paris,
    );
    app.clock.set(send_at - Duration::seconds(3));
    let mut cron = sched.clone().start(app.clock.clone()).await.unwrap();
    smtp.wait_for(2, StdDuration::from_secs(40));
    let issue = &smtp.messages()[1];
    assert_eq!(issue.rcpt(), "claire@example.org");
    let parsed = mail_parser::MessageParser::default()
        .parse(&issue.raw)
        .unwrap();
    let list_unsub = parsed.header_raw("List-Unsubscribe").unwrap().to_string();
    assert!(parsed
        .header_raw("List-Unsubscribe-Post")
        .unwrap()
        .contains("List-Unsubscribe=One-Click"));
    let one_click = list_unsub
        .split(['<', '>'])
        .find(|s| s.starts_with("http"))
        .unwrap()
        .to_string();
    eventually("the run of d1 is recorded", || {
        app.store
            .last_run()
            .unwrap()
            .is_some_and(|r| r.date == d1 && r.status == RunStatus::Ok)
    })
    .await;

    // RFC 8058 one-click: POST to the header's URL, token in the query string.
    let res = http
        .post(&one_click)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "no redirect");
    assert_status(&app, "claire@example.org", SubscriberStatus::Unsubscribed);

    // The next day's send reaches the others, not her.
    add_active(&app, "witness@example.org");
    let d2 = d1.succ_opt().unwrap();
    app::archive(&app, d2);
    let send_at = digestif::domain::local_instant(
        d2,
        app.cfg.newsletter.send_time.0,
        chrono_tz::Europe::Paris,
    );
    app.clock.set(send_at - Duration::seconds(2));
    eventually("the run of d2 is recorded", || {
        app.store.last_run().unwrap().is_some_and(|r| r.date == d2)
    })
    .await;
    cron.shutdown().await.unwrap();
    let msgs = smtp.messages();
    assert_eq!(
        msgs.len(),
        3,
        "confirmation, d1 to Claire, d2 to the witness"
    );
    assert_eq!(msgs[2].rcpt(), "witness@example.org");
}

// ------------------------------------------------------------------ unsubscribe

async fn a_get_on_the_unsubscribe_link_shows_one_button_and_changes_nothing(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let id = add_active(&app, "paul@example.org");
    let url = unsub_url(&app, id);
    for _ in 0..3 {
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        let body = res.text().await.unwrap();
        assert!(
            body.contains("<form method=\"post\" action=\"unsubscribe\">"),
            "{body}"
        );
        assert!(body.contains("Confirmer la désinscription"), "{body}");
        assert!(body.contains("p…@example.org"), "{body}");
    }
    assert_status(&app, "paul@example.org", SubscriberStatus::Active);
}

async fn the_unsubscribe_page_speaks_the_subscribers_language(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    app.store
        .upsert_subscriber(&NewSubscriber {
            locale: Some(digestif::domain::Locale::En),
            ..subscriber("jane@example.org", None)
        })
        .unwrap();
    let id = app
        .store
        .subscriber_by_email(&email("jane@example.org"))
        .unwrap()
        .unwrap()
        .id;
    let body = client()
        .get(unsub_url(&app, id))
        .header("accept-language", "fr-FR")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("<html lang=\"en\">"), "{body}");
    assert!(body.contains("Confirm unsubscribe"), "{body}");
}

/// From the unsubscribe page to the preferences form and back to the store:
/// language and sections change, the subscription does not.
async fn the_unsubscribe_page_leads_to_preferences_that_change_language_and_sections(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let id = add_active(&app, "paul@example.org");
    let token = unsub_token(&app, id);
    let offered = app.cfg.categories();
    assert!(
        offered.len() >= 2,
        "the test site offers sections: {offered:?}"
    );

    let body = get(&app, &format!("/unsubscribe?token={token}"))
        .await
        .text()
        .await
        .unwrap();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &token)
        .finish();
    assert!(
        body.contains(&format!("href=\"preferences?{query}\"")),
        "a link to the preferences: {body}"
    );

    let res = get(&app, &format!("/preferences?{query}")).await;
    assert_eq!(res.status(), 200);
    let form = res.text().await.unwrap();
    assert!(
        form.contains("<form method=\"post\" action=\"preferences\""),
        "{form}"
    );
    assert!(form.contains("<option value=\"fr\" selected>"), "{form}");
    assert!(form.contains("p…@example.org"), "{form}");

    let chosen = &offered[1];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &token)
        .append_pair("locale", "en")
        .append_pair("categories", chosen)
        .finish();
    let res = client()
        .post(app.url("/preferences"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("<html lang=\"en\">") && page.contains("Preferences saved"),
        "{page}"
    );
    let s = app.store.subscriber_by_id(id).unwrap().unwrap();
    assert_eq!(s.locale, Some(digestif::domain::Locale::En));
    assert_eq!(s.categories, vec![chosen.clone()]);
    assert_eq!(s.status, SubscriberStatus::Active);

    // An unknown section is named and changes nothing; a forged token is refused.
    let res = client()
        .post(app.url("/preferences"))
        .body(format!("token={token}&categories=Astrologie"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("Astrologie"));
    let res = client()
        .post(app.url("/preferences"))
        .body("token=garbage&locale=fr")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let s = app.store.subscriber_by_id(id).unwrap().unwrap();
    assert_eq!(
        (s.locale, s.categories),
        (Some(digestif::domain::Locale::En), vec![chosen.clone()])
    );
}

async fn a_forged_unsubscribe_token_gets_a_400_page_and_changes_nothing(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let id = add_active(&app, "paul@example.org");
    let other = token::unsubscribe_token(
        &Secret::new("another-secret-entirely-123"),
        &app.cfg.list_id(),
        &app.store.subscriber_by_id(id).unwrap().unwrap().link_key,
    );
    let mut genuine = unsub_token(&app, id);
    genuine.replace_range(genuine.len() - 2.., "AA");
    for forged in [other, genuine, "garbage".to_string(), String::new()] {
        let res = client()
            .post(app.url(&format!("/unsubscribe?token={forged}")))
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "token {forged:?}");
        let body = res.text().await.unwrap();
        assert!(body.contains("Lien invalide"), "{body}");
        let res = get(&app, &format!("/unsubscribe?token={forged}")).await;
        assert_eq!(res.status(), 400);
    }
    assert_status(&app, "paul@example.org", SubscriberStatus::Active);
}

async fn one_click_unsubscribe_is_idempotent_and_answers_200_without_redirect(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let id = add_active(&app, "paul@example.org");
    let url = unsub_url(&app, id);
    for _ in 0..2 {
        let res = client()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("location").is_none());
        assert!(res.text().await.unwrap().contains("Vous êtes désinscrit"));
        assert_status(&app, "paul@example.org", SubscriberStatus::Unsubscribed);
    }
    // The button's form (token in the body) works as well.
    let id2 = add_active(&app, "anne@example.org");
    let res = client()
        .post(app.url("/unsubscribe"))
        .form(&[("token", unsub_token(&app, id2))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_status(&app, "anne@example.org", SubscriberStatus::Unsubscribed);
}

// ------------------------------------------------------------------ sign-up

async fn sign_up(app: &App, addr: &str) -> (u16, String) {
    let res = client()
        .post(app.url("/subscribe"))
        .form(&[("email", addr), ("locale", "fr")])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn sign_up_answers_the_same_whether_the_address_is_known_or_not(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    add_active(&app, "known@example.org");
    let known = sign_up(&app, "known@example.org").await;
    let unknown = sign_up(&app, "nobody@example.org").await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 200);
    // Nobody is subscribed without confirming.
    assert!(app
        .store
        .subscriber_by_email(&email("nobody@example.org"))
        .unwrap()
        .is_none_or(|s| s.status != SubscriberStatus::Active));
    // The active address gets no confirmation (the form cannot be used to mail it).
    assert_eq!(
        app::eml_files(&app.outbox()).len(),
        1,
        "one confirmation, to the new address only"
    );
}

async fn a_bad_address_is_refused_with_the_form_shown_again(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let (status, body) = sign_up(&app, "not-an-address").await;
    assert_eq!(status, 400);
    assert!(body.contains("role=\"alert\""), "{body}");
    assert!(body.contains("value=\"not-an-address\""), "{body}");
    let res = client()
        .post(app.url("/subscribe"))
        .form(&[("email", "a@example.org"), ("categories", "Astrologie")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(app::eml_files(&app.outbox()).is_empty());
}

async fn too_many_sign_ups_from_one_client_get_a_429_page(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    // subscribe_per_minute = 3 in the test config.
    for i in 0..3 {
        assert_eq!(sign_up(&app, &format!("a{i}@example.org")).await.0, 200);
    }
    let (status, body) = sign_up(&app, "a9@example.org").await;
    assert_eq!(status, 429);
    assert!(body.contains("Trop de demandes"), "{body}");
    assert_eq!(app::eml_files(&app.outbox()).len(), 3);
}

fn confirm_link_of(app: &App, nth: usize) -> String {
    let mails = app::eml_files(&app.outbox());
    app::link_in(&mails[nth], "confirm")
}

/// The confirmation form's POST with `token`.
async fn post_confirm(app: &App, token: &str) -> reqwest::Response {
    client()
        .post(app.url("/confirm"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

fn token_of(link: &str) -> String {
    url::Url::parse(link)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "token")
        .unwrap()
        .1
        .to_string()
}

async fn an_unsubscribed_reader_who_confirms_a_new_sign_up_is_active_again(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let id = add_active(&app, "back@example.org");
    app.store
        .set_status(
            id,
            SubscriberStatus::Unsubscribed,
            "test",
            digestif::clock::now(),
        )
        .unwrap();
    assert_eq!(sign_up(&app, "back@example.org").await.0, 200);
    // Signing up alone changes nothing.
    assert_status(&app, "back@example.org", SubscriberStatus::Unsubscribed);
    let tok = token_of(&confirm_link_of(&app, 0));
    let res = post_confirm(&app, &tok).await;
    assert_eq!(res.status(), 200);
    assert_status(&app, "back@example.org", SubscriberStatus::Active);
    // A second click is harmless.
    let res = post_confirm(&app, &tok).await;
    assert_eq!(res.status(), 200);
}

async fn an_expired_or_forged_confirmation_link_is_refused(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    assert_eq!(sign_up(&app, "late@example.org").await.0, 200);
    let tok = token_of(&confirm_link_of(&app, 0));
    // 49 hours later (confirm_ttl_hours = 48 by default).
    app.clock.set(digestif::clock::now() + Duration::hours(49));
    let res = get(&app, &format!("/confirm?token={tok}")).await;
    assert_eq!(res.status(), 400);
    let res = post_confirm(&app, &tok).await;
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("plus valide"));
    let forged = token::confirm_token(
        &Secret::new("not-the-secret-at-all-123"),
        "late@example.org",
        digestif::clock::now() + Duration::hours(100),
    );
    app.clock.set(digestif::clock::now());
    let res = post_confirm(&app, &forged).await;
    assert_eq!(res.status(), 400);
    assert!(app
        .store
        .subscriber_by_email(&email("late@example.org"))
        .unwrap()
        .is_none_or(|s| s.status != SubscriberStatus::Active));
}

// ------------------------------------------------------------------ archive, health, metrics

async fn the_archive_lists_past_issues_newest_first_without_personal_data(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let d1 = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
    let future = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
    for d in [d1, d2, future] {
        app::archive(&app, d);
    }
    app.clock.set("2026-11-27T12:00:00Z".parse().unwrap());
    let body = get(&app, "/archive").await.text().await.unwrap();
    let (p1, p2) = (
        body.find("Titre principal du 2026-11-25").unwrap(),
        body.find("Titre principal du 2026-11-26").unwrap(),
    );
    assert!(p2 < p1, "newest first");
    assert!(
        body.contains(r#"<time datetime="2026-11-26">jeudi 26 novembre 2026</time>"#),
        "dates in the reader's words: {body}"
    );
    assert!(
        body.contains(r#"<link rel="alternate" type="application/atom+xml" title="L'Essentiel" href="archive/feed.xml">"#),
        "the feed is announced: {body}"
    );
    assert!(
        !body.contains("2026-11-28"),
        "an issue is not shown before its send time"
    );

    let res = get(&app, "/archive/2026-11-26").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let html = res.text().await.unwrap();
    assert!(html.contains("Le budget 2027 en débat"));
    assert!(!html.contains("token="), "no token in the public issue");
    assert_eq!(get(&app, "/archive/2026-11-28").await.status(), 404);
    assert_eq!(get(&app, "/archive/2026-13-45").await.status(), 404);
    assert_eq!(get(&app, "/archive/..%2F..%2Fetc").await.status(), 404);

    let res = get(&app, "/archive/feed.xml").await;
    assert_eq!(
        res.headers()["content-type"],
        "application/atom+xml; charset=utf-8"
    );
    let feed = res.text().await.unwrap();
    let parsed = feed_rs::parser::parse(feed.as_bytes()).expect("a valid Atom feed");
    assert_eq!(parsed.entries.len(), 2);
    assert_eq!(
        parsed.entries[0].links[0].href,
        app.url("/archive/2026-11-26")
    );
}

async fn healthz_reports_the_store_and_the_last_run_and_metrics_count_subscribers(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let res = get(&app, "/healthz").await;
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(v["store"], "ok");
    assert!(v["last_run"].is_null());

    let d = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let t = "2026-11-27T06:00:00Z".parse::<DateTime<Utc>>().unwrap();
    app.store
        .record_run(&digestif::store::RunRecord {
            date: d,
            started_at: t,
            finished_at: t + Duration::milliseconds(1500),
            status: RunStatus::Ok,
            sent: 12,
            failed: 0,
            retried: 1,
            in_doubt: 0,
            message: String::new(),
        })
        .unwrap();
    add_active(&app, "a@example.org");
    let id = add_active(&app, "b@example.org");
    app.store
        .set_status(id, SubscriberStatus::Unsubscribed, "test", t)
        .unwrap();

    let v: serde_json::Value = healthz(&app).await;
    assert_eq!(v["last_run"]["date"], "2026-11-27");
    assert_eq!(v["last_run"]["status"], "ok");

    let res = get(&app, "/metrics").await;
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    assert!(
        text.contains("digestif_subscribers{status=\"active\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("digestif_subscribers{status=\"unsubscribed\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("digestif_last_run_duration_seconds 1.500\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "digestif_last_run_timestamp_seconds {}\n",
            (t + Duration::milliseconds(1500)).timestamp()
        )),
        "{text}"
    );
}

async fn an_unknown_page_is_a_404_page_in_the_visitors_language(db: Db) {
    let app = app::start_on(db, Mail::File, "07:00", "").await;
    let res = client()
        .get(app.url("/nope"))
        .header("accept-language", "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("Page not found"));
}

// ------------------------------------------------------------------ scheduler with an injected clock

/// Counts what the scheduler asks of the pipeline; fails the first `fail` sends.
struct CountingPipeline {
    builds: AtomicU32,
    sends: AtomicU32,
    fail: AtomicU32,
}

impl IssuePipeline for CountingPipeline {
    fn pass<'a>(&'a self, _due: &'a DueFilter) -> BoxFuture<'a, Result<Pass, SendError>> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        self.sends.fetch_add(1, Ordering::SeqCst);
        let failing = self.fail.load(Ordering::SeqCst) > 0;
        if failing {
            self.fail.fetch_sub(1, Ordering::SeqCst);
        }
        Box::pin(async move {
            if failing {
                return Err(SendError::Deliver(anyhow::anyhow!(
                    "connection refused (test)"
                )));
            }
            Ok(Pass::Sent(PassReport {
                sent: 5,
                ..Default::default()
            }))
        })
    }
}

/// The scheduler with the real pipeline, on the app's config, store and metrics.
fn live_scheduler(app: &App) -> Scheduler {
    Scheduler::new(
        app.cfg.clone(),
        app.store.clone(),
        Arc::new(
            digestif::schedule::LivePipeline::new(
                app.cfg.clone(),
                app.store.clone(),
                Secret::new(app::SECRET),
            )
            .unwrap(),
        ),
        app.metrics.clone(),
    )
}

fn scheduler(app: &App, fail: u32) -> (Arc<Scheduler>, Arc<CountingPipeline>) {
    let p = Arc::new(CountingPipeline {
        builds: AtomicU32::new(0),
        sends: AtomicU32::new(0),
        fail: AtomicU32::new(fail),
    });
    let s = Arc::new(Scheduler::new(
        app.cfg.clone(),
        app.store.clone(),
        p.clone(),
        app.metrics.clone(),
    ));
    (s, p)
}

/// One pass of the scheduler at `when`.
async fn outcome(s: &Scheduler, when: &str) -> RunOutcome {
    s.run_once(at(when)).await.unwrap()
}

/// Whether the pass at `when` found nothing due.
async fn idle_at(s: &Scheduler, when: &str) -> bool {
    matches!(outcome(s, when).await, RunOutcome::Idle(_))
}

/// Whether the pass at `when` ran an issue.
async fn runs_at(s: &Scheduler, when: &str) -> bool {
    matches!(outcome(s, when).await, RunOutcome::Ran(_))
}

/// What the scheduler ran at `when`; panics when it did not run.
async fn ran(s: &Scheduler, when: &str) -> digestif::store::RunRecord {
    match outcome(s, when).await {
        RunOutcome::Ran(r) => r,
        other => panic!("no run at {when}: {other:?}"),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_service_does_not_start_the_same_date_twice() {
    let app = app::start(Mail::File, "07:00").await;
    let (first, p1) = scheduler(&app, 0);
    assert!(idle_at(&first, "2026-11-27T05:59:00Z").await);
    let r = ran(&first, "2026-11-27T06:00:00Z").await;
    assert_eq!((r.status, r.sent), (RunStatus::Ok, 5));
    // "Restart": a new scheduler on the same database, a minute later.
    let (second, p2) = scheduler(&app, 0);
    assert!(idle_at(&second, "2026-11-27T06:01:00Z").await);
    assert_eq!(
        p1.sends.load(Ordering::SeqCst) + p2.sends.load(Ordering::SeqCst),
        1
    );
    // Tomorrow is due again.
    assert!(runs_at(&second, "2026-11-28T06:00:30Z").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_date_leased_by_another_process_is_left_alone() {
    let app = app::start(Mail::File, "07:00").await;
    let now = at("2026-11-27T06:00:00Z");
    assert!(app
        .store
        .try_lease(
            "issue:2026-11-27",
            "other-host-1",
            now,
            now + Duration::seconds(30)
        )
        .unwrap());
    let (s, p) = scheduler(&app, 0);
    assert_eq!(
        s.run_once(now).await.unwrap(),
        RunOutcome::Busy(NaiveDate::from_ymd_opt(2026, 11, 27).unwrap())
    );
    assert_eq!(
        p.builds.load(Ordering::SeqCst),
        0,
        "no work started without the lease"
    );
    // Once the other holder's lease expired (it died), this one takes over.
    assert!(matches!(
        s.run_once(now + Duration::seconds(31)).await.unwrap(),
        RunOutcome::Ran(_)
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_is_retried_within_catch_up_and_skipped_after_it() {
    let app = app::start(Mail::File, "07:00").await;
    let (s, p) = scheduler(&app, 2);
    let r = ran(&s, "2026-11-27T06:00:00Z").await;
    assert_eq!(r.status, RunStatus::Failed(FailedStep::Send));
    assert!(r.message.contains("connection refused"), "{}", r.message);
    let r = ran(&s, "2026-11-27T06:10:00Z").await;
    assert_eq!(r.status, RunStatus::Failed(FailedStep::Send));
    let r = ran(&s, "2026-11-27T06:20:00Z").await;
    assert_eq!(r.status, RunStatus::Ok);
    assert_eq!(p.sends.load(Ordering::SeqCst), 3);

    // Next day: failing until the catch-up window (3 h) closes, then skipped, with the reason.
    let (s, _) = scheduler(&app, 100);
    let r = ran(&s, "2026-11-28T06:00:00Z").await;
    assert_eq!(r.status, RunStatus::Failed(FailedStep::Send));
    let r = ran(&s, "2026-11-28T09:00:01Z").await;
    assert_eq!(r.status, RunStatus::Skipped);
    assert!(r.message.contains("catch-up"), "{}", r.message);
    assert!(idle_at(&s, "2026-11-28T09:01:00Z").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_back_after_the_catch_up_window_skips_the_day_and_logs_why() {
    let app = app::start(Mail::File, "07:00").await;
    let (s, p) = scheduler(&app, 0);
    assert!(runs_at(&s, "2026-11-26T06:00:00Z").await);
    // Down all morning of the 27th; back at 15:00 Paris.
    let r = ran(&s, "2026-11-27T14:00:00Z").await;
    assert_eq!(
        (r.date.to_string().as_str(), r.status),
        ("2026-11-27", RunStatus::Skipped)
    );
    assert_eq!(p.sends.load(Ordering::SeqCst), 1);
    let h: serde_json::Value = healthz(&app).await;
    assert_eq!(h["last_run"]["status"], "skipped");
}

// ------------------------------------------------------------------ the binary

fn serve_config(dir: &std::path::Path, smtp_port: u16) -> (std::path::PathBuf, NaiveDate) {
    // send_time one minute ago (Paris): the first tick sends it, within catch-up.
    let now = digestif::clock::now() - Duration::minutes(1);
    let local = now.with_timezone(&chrono_tz::Europe::Paris);
    let date = paris_date(now);
    let text = app::config_text(
        "http://127.0.0.1:9",
        &Mail::Smtp(smtp_port),
        &local.format("%H:%M").to_string(),
    );
    std::fs::create_dir_all(dir.join("feeds")).unwrap();
    let path = dir.join("digestif.toml");
    std::fs::write(&path, text).unwrap();
    (path, date)
}

/// A running `digestif serve`, its log (stderr) collected as it comes.
struct Served {
    child: std::process::Child,
    log: Arc<Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Served {
    /// How many times the scheduler found nothing due so far.
    fn idle_looks(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .matches("schedule looked at: nothing due")
            .count()
    }
}

fn serve(config: &std::path::Path, secret: Option<&str>) -> Served {
    let mut c = Command::new(env!("CARGO_BIN_EXE_digestif"));
    c.arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"]);
    c.env_remove("DIGESTIF_SECRET");
    if let Some(s) = secret {
        c.env("DIGESTIF_SECRET", s);
    }
    // The scheduler's looks are logged at debug level: the tests wait on them.
    c.env(
        "RUST_LOG",
        "info,tokio_cron_scheduler=warn,digestif::schedule=debug",
    );
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (log, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    Served { child, log, reader }
}

fn sigterm(served: &Served) {
    let st = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A served site sending to `smtp`, today's issue archived, `readers` active
/// readers reader0..; the folder lives as long as the first item.
fn serve_site(
    smtp: &SmtpServer,
    readers: usize,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    NaiveDate,
    digestif::store::SqliteStore,
) {
    let dir = tempfile::tempdir().unwrap();
    let (config, date) = serve_config(dir.path(), smtp.port);
    let cfg = digestif::config::Config::from_file(&config).unwrap();
    app::archive_in_folder(&cfg, date);
    let store = digestif::store::SqliteStore::for_config(&cfg).unwrap();
    for i in 0..readers {
        add(
            &store,
            &format!("reader{i}@example.org"),
            SubscriberStatus::Active,
        );
    }
    (dir, config, date, store)
}

/// The envelope recipients of `msgs`, sorted, each once.
fn distinct_rcpts(msgs: &[support::Received]) -> Vec<&str> {
    let mut rcpts: Vec<&str> = msgs.iter().map(|m| m.rcpt()).collect();
    rcpts.sort();
    rcpts.dedup();
    rcpts
}

fn wait_exit(mut served: Served) -> (i32, String) {
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        if let Some(st) = served.child.try_wait().unwrap() {
            served.reader.join().unwrap();
            let log = served.log.lock().unwrap().clone();
            return (st.code().unwrap_or(-1), log);
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(StdDuration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_serve_processes_on_one_database_send_one_issue_and_stop_cleanly_on_sigterm() {
    let smtp = SmtpServer::start(&[]);
    let (_dir, config, date, store) = serve_site(&smtp, 20);
    let a = serve(&config, Some(app::SECRET));
    let b = serve(&config, Some(app::SECRET));
    eventually("one run recorded", || {
        store
            .last_run()
            .unwrap()
            .is_some_and(|r| r.date == date && r.status == RunStatus::Ok)
    })
    .await;
    // Both processes look at the schedule twice more after the run: neither sends again.
    let seen = (a.idle_looks(), b.idle_looks());
    eventually("both processes looked at the schedule again", || {
        a.idle_looks() >= seen.0 + 2 && b.idle_looks() >= seen.1 + 2
    })
    .await;
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 20, "each reader exactly once");
    let rcpts = distinct_rcpts(&msgs);
    assert_eq!(rcpts.len(), 20);
    assert_eq!(store.ledger_counts(date).unwrap().sent, 20);
    sigterm(&a);
    sigterm(&b);
    let (ca, ea) = wait_exit(a);
    let (cb, eb) = wait_exit(b);
    assert_eq!(ca, 0, "{ea}");
    assert_eq!(cb, 0, "{eb}");
    assert!(
        ea.contains("stopping") && eb.contains("stopping"),
        "{ea}\n{eb}"
    );
}

#[test]
fn serve_refuses_to_start_without_a_secret_when_mailing_over_smtp() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = serve_config(dir.path(), 9);
    let (code, err) = wait_exit(serve(&config, None));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DIGESTIF_SECRET"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_send_finishes_the_messages_in_flight_and_a_restart_sends_the_rest_once() {
    let smtp = SmtpServer::start(&["--delay-ms", "250"]);
    let (_dir, config, date, store) = serve_site(&smtp, 40);
    let first = serve(&config, Some(app::SECRET));
    smtp.wait_for(2, StdDuration::from_secs(40));
    sigterm(&first);
    let (code, log) = wait_exit(first);
    assert_eq!(code, 0, "{log}");
    let counts = store.ledger_counts(date).unwrap();
    assert_eq!(
        counts.sending, 0,
        "nothing left in flight: {counts:?}\n{log}"
    );
    assert!(counts.sent < 40, "it stopped taking new work: {counts:?}");
    assert_eq!(counts.sent + counts.pending, 40, "{counts:?}");
    assert_eq!(
        counts.sent as usize,
        smtp.count(),
        "the ledger matches what the server got"
    );
    let last = store.last_run().unwrap().unwrap();
    assert_eq!(
        last.status,
        RunStatus::Partial(PartialReason::Stopped),
        "{last:?}"
    );

    // Started again, it sends the rest, each reader once.
    let second = serve(&config, Some(app::SECRET));
    eventually("the rest is sent", || {
        store
            .last_run()
            .unwrap()
            .is_some_and(|r| r.status == RunStatus::Ok)
    })
    .await;
    sigterm(&second);
    assert_eq!(wait_exit(second).0, 0);
    let msgs = smtp.messages();
    let rcpts = distinct_rcpts(&msgs);
    assert_eq!((msgs.len(), rcpts.len()), (40, 40));
}

/// A feed of two stories published a few hours before `now`, inside the window
/// of today's issue.
fn fresh_feed(now: DateTime<Utc>) -> String {
    let item = |title: &str, slug: &str, hours: i64| {
        format!(
            "<item><title>{title}</title><link>https://example.com/{slug}</link>\
             <description>Le récit de la journée, en quelques lignes.</description>\
             <pubDate>{}</pubDate></item>",
            (now - Duration::hours(hours)).to_rfc2822()
        )
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><rss version=\"2.0\"><channel>\
         <title>Monde</title><link>https://example.com/</link>{}{}</channel></rss>",
        item("Budget 2027 : ce qui change", "budget", 2),
        item("Sommet sur le climat à Nairobi", "climat", 3)
    )
}

/// Regression: when every feed was down at send time, the run was recorded as
/// `skipped`, which finished the date, and the issue was never sent even though
/// the feeds came back within the catch-up window.
#[tokio::test(flavor = "multi_thread")]
async fn every_feed_down_at_send_time_fails_the_run_and_the_issue_goes_out_when_they_return() {
    let smtp = SmtpServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (config, date) = serve_config(dir.path(), smtp.port);
    let cfg = digestif::config::Config::from_file(&config).unwrap();
    let store = digestif::store::SqliteStore::for_config(&cfg).unwrap();
    for addr in ["ana@example.org", "ben@example.org"] {
        add(&store, addr, SubscriberStatus::Active);
    }
    // feeds/monde.xml, the only source, does not exist: nothing can be read.
    let server = serve(&config, Some(app::SECRET));
    eventually("a failed build is recorded", || {
        store.last_run().unwrap().is_some_and(|r| r.date == date)
    })
    .await;
    let run = store.last_run().unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Failed(FailedStep::Build), "{run:?}");
    assert!(
        run.message.contains("every source failed") && run.message.contains("Monde"),
        "{run:?}"
    );
    assert_eq!(smtp.count(), 0);

    // The feed is back: a later pass builds the issue and sends it.
    std::fs::write(
        dir.path().join("feeds/monde.xml"),
        fresh_feed(digestif::clock::now()),
    )
    .unwrap();
    eventually("the issue is sent", || {
        store
            .last_run()
            .unwrap()
            .is_some_and(|r| r.date == date && r.status == RunStatus::Ok)
    })
    .await;
    sigterm(&server);
    let (code, log) = wait_exit(server);
    assert_eq!(code, 0, "{log}");
    let msgs = smtp.messages();
    assert_eq!(
        distinct_rcpts(&msgs),
        ["ana@example.org", "ben@example.org"],
        "{log}"
    );
    assert_eq!(msgs.len(), 2);
    assert!(
        log.contains("the issue could not be built"),
        "the failed build is logged: {log}"
    );
}

/// The service checks the issue against the sending rules before anyone gets
/// it, as `digestif send` does: an issue too large for Gmail is not sent.
#[tokio::test(flavor = "multi_thread")]
async fn an_issue_that_breaks_a_sending_rule_is_not_sent_by_the_service_either() {
    let smtp = SmtpServer::start(&[]);
    let app = app::start(Mail::Smtp(smtp.port), "07:00").await;
    let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let mut digest = app::digest(&app.cfg, date);
    let story = digest.stories[0].clone();
    digest.stories = (0..300)
        .map(|i| {
            let mut s = story.clone();
            s.article.url = Some(format!("https://news.example.com/long/{i}"));
            s.article.summary = "Un très long résumé. ".repeat(100);
            s
        })
        .collect();
    let assets = digestif::pipeline::assets(&app.cfg).unwrap();
    digestif::pipeline::archive_issue(&app.cfg, &assets, &digest).unwrap();
    add_active(&app, "paris@example.org");
    let sched = live_scheduler(&app);
    let r = ran(&sched, "2026-11-27T06:00:00Z").await;
    assert_eq!(r.status, RunStatus::Failed(FailedStep::Lint), "{r:?}");
    assert!(r.message.contains("too-large"), "{}", r.message);
    assert_eq!((r.sent, smtp.count()), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reader_in_new_york_gets_the_frozen_issue_at_seven_in_new_york() {
    let smtp = SmtpServer::start(&[]);
    let app = app::start(Mail::Smtp(smtp.port), "07:00").await;
    let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    app::archive(&app, date);
    add_active(&app, "paris@example.org");
    app.store
        .upsert_subscriber(&NewSubscriber {
            timezone: Some(chrono_tz::America::New_York),
            ..subscriber("ny@example.org", None)
        })
        .unwrap();
    let sched = live_scheduler(&app);
    // 07:00 in Paris.
    let r = ran(&sched, "2026-11-27T06:00:00Z").await;
    assert_eq!(
        (r.status, r.sent),
        (RunStatus::Partial(PartialReason::WaitingZones), 1),
        "{r:?}"
    );
    assert_eq!(smtp.messages()[0].rcpt(), "paris@example.org");
    // Nothing more until 07:00 in New York (12:00 UTC).
    assert_eq!(
        outcome(&sched, "2026-11-27T08:00:00Z").await,
        RunOutcome::Idle(at("2026-11-27T12:00:00Z"))
    );
    let r = ran(&sched, "2026-11-27T12:00:05Z").await;
    assert_eq!((r.status, r.sent), (RunStatus::Ok, 1), "{r:?}");
    let msgs = smtp.messages();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].rcpt(), "ny@example.org");
    assert!(idle_at(&sched, "2026-11-27T13:00:00Z").await);
}
