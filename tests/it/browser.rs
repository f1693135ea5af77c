//! The service's pages in a real headless browser (Debian's chromium): the
//! sign-up form, the unsubscribe button and the preferences form work when clicked. Skipped, with a
//! message, only when chromium is not installed (`scripts/test.sh` installs it), and
//! never under CI (`CI` set): there a missing browser fails the tests.

use crate::support::app;
use crate::support::browser;

use std::path::PathBuf;

use app::Mail;
use digestif::config::Secret;
use digestif::domain::{SubscriberEmail, SubscriberStatus};
use digestif::store::NewSubscriber;

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sign_up_form_and_the_confirm_button_work_when_clicked() {
    let Some(bin) = browser::chromium_for_test() else {
        return;
    };
    let app = app::start(Mail::File, "07:00").await;
    let (base, outbox) = (app.base.clone(), app.outbox());
    let page = tokio::task::spawn_blocking(move || {
        let mut b = browser::Browser::start(&bin);
        b.call(
            "Emulation.setTimezoneOverride",
            serde_json::json!({"timezoneId": "America/New_York"}),
        );
        b.goto(&format!("{base}/subscribe?lang=fr"));
        b.screenshot(&shots().join("subscribe.png"));
        assert!(b.text().contains("La newsletter qui vous briefe en 5 min"));
        b.type_into("#email", "lea@example.org");
        b.type_into("#name", "Léa");
        b.click("input[name=categories][value='Culture']");
        b.click("button[type=submit]");
        b.wait_for("document.body.innerText.includes('Vérifiez votre boîte')");
        let mails = app::eml_files(&outbox);
        assert_eq!(mails.len(), 1);
        let link = app::link_in(&mails[0], "confirm");
        b.goto(&link);
        b.click("button[type=submit]");
        b.wait_for("document.body.innerText.includes('Inscription confirmée')");
        b.screenshot(&shots().join("confirmed.png"));
        b.text()
    })
    .await
    .unwrap();
    assert!(page.contains("Merci"), "{page}");
    let s = app
        .store
        .subscriber_by_email(&SubscriberEmail::parse("lea@example.org").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(s.status, SubscriberStatus::Active);
    assert_eq!(s.name.as_deref(), Some("Léa"));
    assert_eq!(s.categories, vec!["Culture".to_string()]);
    assert_eq!(
        s.timezone,
        Some(chrono_tz::America::New_York),
        "the browser's zone is kept"
    );
}

/// Marc, an active reader of the app, and his unsubscribe link.
fn marc(app: &app::App) -> (SubscriberEmail, String) {
    let email = SubscriberEmail::parse("marc@example.org").unwrap();
    app.store
        .upsert_subscriber(&NewSubscriber {
            email: email.clone(),
            name: Some("Marc".into()),
            locale: None,
            categories: vec![],
            timezone: None,
            status: SubscriberStatus::Active,
        })
        .unwrap();
    let key = app
        .store
        .subscriber_by_email(&email)
        .unwrap()
        .unwrap()
        .link_key;
    let token = digestif::deliver::token::unsubscribe_token(
        &Secret::new(app::SECRET),
        &app.cfg.list_id(),
        &key,
    );
    (email, app.url(&format!("/unsubscribe?token={token}")))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unsubscribe_button_works_when_clicked() {
    let Some(bin) = browser::chromium_for_test() else {
        return;
    };
    let app = app::start(Mail::File, "07:00").await;
    let (email, url) = marc(&app);
    let store = app.store.clone();
    let e = email.clone();
    tokio::task::spawn_blocking(move || {
        let mut b = browser::Browser::start(&bin);
        b.goto(&url);
        b.screenshot(&shots().join("unsubscribe.png"));
        // Opening the page changed nothing.
        assert_eq!(
            store.subscriber_by_email(&e).unwrap().unwrap().status,
            SubscriberStatus::Active
        );
        b.click("button[type=submit]");
        b.wait_for("document.body.innerText.includes('Vous êtes désinscrit')");
        b.screenshot(&shots().join("unsubscribed.png"));
    })
    .await
    .unwrap();
    assert_eq!(
        app.store
            .subscriber_by_email(&email)
            .unwrap()
            .unwrap()
            .status,
        SubscriberStatus::Unsubscribed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preferences_link_and_form_work_when_clicked() {
    let Some(bin) = browser::chromium_for_test() else {
        return;
    };
    let app = app::start(Mail::File, "07:00").await;
    let (email, url) = marc(&app);
    let section = app.cfg.categories()[0].clone();
    let pick = section.clone();
    tokio::task::spawn_blocking(move || {
        let mut b = browser::Browser::start(&bin);
        b.goto(&url);
        b.click("a[href^=preferences]");
        b.wait_for("document.querySelector('#preferences') !== null");
        b.eval("document.querySelector('#locale').value = 'en'");
        b.click(&format!("input[name=categories][value='{pick}']"));
        b.screenshot(&shots().join("preferences.png"));
        b.click("button[type=submit]");
        b.wait_for("document.body.innerText.includes('Preferences saved')");
    })
    .await
    .unwrap();
    let s = app.store.subscriber_by_email(&email).unwrap().unwrap();
    assert_eq!(s.locale, Some(digestif::domain::Locale::En));
    assert_eq!(s.categories, vec![section]);
    assert_eq!(s.status, SubscriberStatus::Active, "still subscribed");
}
