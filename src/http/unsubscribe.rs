//! `GET /unsubscribe` shows one button; `POST /unsubscribe` acts (the button's
//! form, or RFC 8058 one-click with the token in the query string).
//!
//! A GET never changes anything: mail scanners prefetch links. The POST is
//! idempotent and answers 200 without a redirect, as RFC 8058 asks. The mailto
//! of List-Unsubscribe is for operators to route to `digestif unsubscribe EMAIL`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::fields::{Posted, Queried, TokenField};
use super::{page, pages, AppError, AppState, PageLocale, Problem};
use crate::domain::{Locale, Subscriber, SubscriberStatus};
use crate::store::{Store, StoreError};
use std::sync::Arc;

/// The unsubscribe button's form, or an RFC 8058 one-click POST.
#[derive(Debug, Default, Deserialize)]
pub struct UnsubscribeForm {
    token: Option<String>,
    #[serde(rename = "List-Unsubscribe")]
    list_unsubscribe: Option<String>,
}

/// The form's token, else the query string's; an empty one is none.
pub(super) fn token_in(form: Option<String>, query: Option<String>) -> Option<String> {
    let given = |t: Option<String>| t.filter(|v| !v.is_empty());
    given(form).or_else(|| given(query))
}

/// The subscriber behind a genuine token (None: genuine, but the address was removed).
pub(super) async fn resolve(
    state: &AppState,
    token: Option<String>,
    lang: PageLocale,
) -> Result<Option<Subscriber>, AppError> {
    let bad = || {
        AppError::new(StatusCode::BAD_REQUEST, lang.0, Problem::BadLink).for_brand(state.brand())
    };
    let token = token.ok_or_else(bad)?;
    use crate::deliver::token::LinkSubject;
    match super::verify_unsubscribe_token(state, &token).ok_or_else(bad)? {
        LinkSubject::Key(key) => state.store(move |s| s.subscriber_by_link_key(&key)).await,
        LinkSubject::LegacyId(id) => state.store(move |s| s.subscriber_by_legacy_id(id)).await,
    }
}

/// The subscriber's language, else the newsletter's (the language of their emails);
/// the visitor's only when the address is gone.
pub(super) fn subscriber_locale(
    state: &AppState,
    sub: Option<&Subscriber>,
    lang: PageLocale,
) -> Locale {
    match sub {
        Some(s) => s.locale.unwrap_or(state.cfg.newsletter.locale),
        None => lang.0,
    }
}

pub async fn show(
    State(state): State<AppState>,
    lang: PageLocale,
    Queried(query): Queried<TokenField>,
) -> Result<Response, AppError> {
    let token = token_in(None, query.token);
    let sub = resolve(&state, token.clone(), lang).await?;
    let locale = subscriber_locale(&state, sub.as_ref(), lang);
    let w = pages::words(locale);
    let who = sub
        .as_ref()
        .map(|s| pages::masked(s.email.as_str()))
        .unwrap_or_else(|| "…".into());
    Ok(page(
        StatusCode::OK,
        pages::one_button(
            locale,
            state.brand(),
            &pages::OneButton {
                title: w.unsub_title,
                ask: w.unsub_ask,
                who: &who,
                action: "unsubscribe",
                token: token.as_deref().unwrap_or(""),
                button: w.unsub_button,
                aside: sub.as_ref().map(|_| {
                    let q: String = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("token", token.as_deref().unwrap_or(""))
                        .finish();
                    (w.prefs_offer, w.prefs_link, format!("preferences?{q}"))
                }),
            },
        ),
    ))
}

pub async fn act(
    State(state): State<AppState>,
    lang: PageLocale,
    Queried(query): Queried<TokenField>,
    Posted(form): Posted<UnsubscribeForm>,
) -> Result<Response, AppError> {
    let one_click = form.list_unsubscribe.as_deref() == Some("One-Click");
    let token = token_in(form.token, query.token);
    let sub = resolve(&state, token, lang).await?;
    let locale = subscriber_locale(&state, sub.as_ref(), lang);
    if let Some(s) = &sub {
        if s.status != SubscriberStatus::Unsubscribed {
            let (id, now) = (s.id, state.now());
            let why = if one_click {
                "one-click unsubscribe"
            } else {
                "unsubscribe page"
            };
            let done = state
                .store(move |st| st.set_status(id, SubscriberStatus::Unsubscribed, why, now))
                .await;
            if let Err(e) = done {
                if e.status == StatusCode::SERVICE_UNAVAILABLE {
                    // The database stayed busy: the visitor (or the mail client's
                    // one-click POST) is told to retry, and the unsubscribe is
                    // retried here meanwhile, so that it is not lost either way.
                    keep_trying(state.clone(), id, why, now);
                }
                return Err(e.in_locale(locale).for_brand(state.brand()));
            }
            state.metrics.unsubscribe();
            tracing::info!(subscriber = id, via = why, "unsubscribed");
        }
    }
    let w = pages::words(locale);
    Ok(super::done_page(
        &state,
        locale,
        w.unsub_done_title,
        w.unsub_done,
    ))
}

/// How long an unsubscribe that met a busy database is retried in the background.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// The pause between two of those tries.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Why an unsubscribe retried in the background was given up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetryGaveUp {
    /// Every try met a busy database until the time was up.
    #[error("the database stayed busy for {} s of retries", .0.as_secs())]
    StayedBusy(std::time::Duration),
    /// A try failed for another reason: retrying would not help.
    #[error("a retry failed: {0}")]
    Failed(#[source] StoreError),
    /// The store call did not finish (it panicked).
    #[error("a retry did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Records the unsubscribe, trying again every `pause` while the database is
/// busy, for `how_long` at most; gives up at once on any other error.
pub(crate) async fn retry_unsubscribe(
    store: Arc<dyn Store>,
    id: i64,
    why: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    pause: std::time::Duration,
    how_long: std::time::Duration,
) -> Result<(), RetryGaveUp> {
    let deadline = tokio::time::Instant::now() + how_long;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        let store = store.clone();
        let done = tokio::task::spawn_blocking(move || {
            store.set_status(id, SubscriberStatus::Unsubscribed, why, at)
        })
        .await?;
        match done {
            Ok(_) => return Ok(()),
            Err(StoreError::Busy(_)) => continue,
            Err(e) => return Err(RetryGaveUp::Failed(e)),
        }
    }
    Err(RetryGaveUp::StayedBusy(how_long))
}

fn keep_trying(state: AppState, id: i64, why: &'static str, at: chrono::DateTime<chrono::Utc>) {
    tokio::spawn(async move {
        match retry_unsubscribe(state.store.clone(), id, why, at, RETRY_PAUSE, RETRY_FOR).await {
            Ok(()) => {
                state.metrics.unsubscribe();
                tracing::info!(subscriber = id, via = why, "unsubscribed after a retry");
            }
            Err(e) => tracing::error!(
                subscriber = id,
                error = %e,
                "an unsubscribe could not be recorded ({e}): record it with \
                 `digestif unsubscribe ADDRESS` for subscriber {id}"
            ),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::fields::testing::{posted, query};
    use super::*;

    #[test]
    fn the_token_comes_from_the_form_or_the_query() {
        let one_click: UnsubscribeForm = posted(b"List-Unsubscribe=One-Click");
        assert_eq!(one_click.list_unsubscribe.as_deref(), Some("One-Click"));
        let q: TokenField = query("token=abc");
        assert_eq!(token_in(one_click.token, q.token), Some("abc".into()));
        let button: UnsubscribeForm = posted(b"token=x%2By");
        assert_eq!(token_in(button.token, None), Some("x+y".into()));
        let q: TokenField = query("token=");
        assert_eq!(
            token_in(posted::<UnsubscribeForm>(b"").token, q.token),
            None
        );
    }

    /// A database file with one active subscriber, and that subscriber's id.
    fn one_reader(dir: &std::path::Path) -> (Arc<dyn Store>, std::path::PathBuf, i64) {
        use crate::store::{sqlite::SqliteStore, suite::new_sub, Subscribers};
        let path = dir.join("d.db");
        let store = SqliteStore::open(&path).unwrap();
        let new = new_sub("r@example.org", SubscriberStatus::Active);
        store.upsert_subscriber(&new).unwrap();
        let id = store.subscriber_by_email(&new.email).unwrap().unwrap().id;
        store
            .set_busy_timeout(std::time::Duration::from_millis(20))
            .unwrap();
        (Arc::new(store), path, id)
    }

    fn retry(store: &Arc<dyn Store>, id: i64, how_long_ms: u64) -> Result<(), RetryGaveUp> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(retry_unsubscribe(
            store.clone(),
            id,
            "test",
            crate::clock::now(),
            std::time::Duration::from_millis(10),
            std::time::Duration::from_millis(how_long_ms),
        ))
    }

    #[test]
    fn a_retry_that_fails_for_another_reason_than_busy_says_why_not_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, id) = one_reader(dir.path());
        let other = rusqlite::Connection::open(&path).unwrap();
        other
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE UPDATE ON subscribers \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
            )
            .unwrap();
        let e = retry(&store, id, 5_000).unwrap_err();
        assert!(
            matches!(&e, RetryGaveUp::Failed(StoreError::Db(m)) if m.contains("refused by the test")),
            "{e:?}"
        );
        assert!(e.to_string().contains("refused by the test"), "{e}");
        assert!(!e.to_string().contains("busy"), "{e}");
    }

    #[test]
    fn a_retry_that_meets_a_busy_database_throughout_says_so_and_one_freed_in_time_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, path, id) = one_reader(dir.path());
        let holder = rusqlite::Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let e = retry(&store, id, 200).unwrap_err();
        assert!(matches!(e, RetryGaveUp::StayedBusy(_)), "{e:?}");
        assert!(e.to_string().contains("stayed busy"), "{e}");
        holder.execute_batch("COMMIT").unwrap();
        retry(&store, id, 5_000).unwrap();
        let s = store.subscriber_by_id(id).unwrap().unwrap();
        assert_eq!(s.status, SubscriberStatus::Unsubscribed);
    }
}
