//! The HTTP side of the service: unsubscribe, sign-up, archive, health, metrics.
//!
//! [`router`] builds the whole app without a socket, so tests can serve it on
//! any port. Handlers are thin: they parse, call the store (on the blocking
//! pool: the store is sync), and render a page. One error type, [`AppError`],
//! turns into a page: 4xx are the visitor's business and not logged, 5xx are
//! logged and never show internals.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::clock::Clock;
use crate::config::{Config, Secret};
use crate::domain::{Locale, SubscriberEmail};
use crate::store::Store;

pub mod archive;
pub mod health;
pub mod mail;
pub mod metrics;
pub mod pages;
pub mod preferences;
pub mod subscribe;
pub mod unsubscribe;

use metrics::Metrics;

/// Sends the few service emails (the sign-up confirmation) through the same
/// transport as the digest.
pub trait Mailer: Send + Sync {
    fn send<'a>(
        &'a self,
        to: &'a SubscriberEmail,
        subject: &'a str,
        text: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub secret: Secret,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub mailer: Arc<dyn Mailer>,
    /// The newsletter's words and theme (dates in the archive, in each language).
    pub assets: Arc<crate::render::Assets>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AppState {
    pub fn new(
        cfg: Arc<Config>,
        store: Arc<dyn Store>,
        secret: Secret,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        mailer: Arc<dyn Mailer>,
    ) -> AppState {
        let per_minute = NonZeroU32::new(cfg.server.subscribe_per_minute.max(1)).expect("≥ 1");
        // `serve` has loaded the templates once already and stops on an error.
        let assets =
            crate::pipeline::assets(&cfg).unwrap_or_else(|_| crate::render::Assets::builtin());
        AppState {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            assets: Arc::new(assets),
            cfg,
            store,
            secret,
            metrics,
            clock,
            mailer,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn brand(&self) -> &str {
        &self.cfg.newsletter.name
    }

    pub fn base_url(&self) -> &str {
        self.cfg.newsletter.base_url.trimmed()
    }

    /// Runs a store call on the blocking pool.
    pub async fn store<T, F>(&self, f: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> crate::store::StoreResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| AppError::internal(anyhow::anyhow!("store task failed: {e}")))?
            .map_err(|e| AppError::internal(anyhow::anyhow!(e)))
    }
}

/// The whole app.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/unsubscribe",
            get(unsubscribe::show).post(unsubscribe::act),
        )
        .route("/subscribe", get(subscribe::form).post(subscribe::submit))
        .route(
            "/preferences",
            get(preferences::show).post(preferences::save),
        )
        .route(
            "/confirm",
            get(subscribe::show_confirm).post(subscribe::confirm),
        )
        .route("/archive", get(archive::index))
        .route("/archive/feed.xml", get(archive::feed))
        .route("/archive/{date}", get(archive::issue))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn not_found(state: axum::extract::State<AppState>, lang: PageLocale) -> AppError {
    let _ = state;
    AppError::new(StatusCode::NOT_FOUND, lang.0, Problem::NotFound)
}

/// Headers on every answer: pages carry tokens in their URL, so no referrer leaves them.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// The client's address, from the connection (not from headers a client can forge).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// The page language when no subscriber is known: `?lang=`, else Accept-Language,
/// else the newsletter's locale.
#[derive(Debug, Clone, Copy)]
pub struct PageLocale(pub Locale);

impl FromRequestParts<AppState> for PageLocale {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let from_query = parts.uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "lang")
                .and_then(|(_, v)| v.parse::<Locale>().ok())
        });
        Ok(PageLocale(
            from_query
                .or_else(|| accept_language(&parts.headers))
                .unwrap_or(s.cfg.newsletter.locale),
        ))
    }
}

/// The first language of Accept-Language that the pages speak.
pub fn accept_language(headers: &HeaderMap) -> Option<Locale> {
    let raw = headers.get(header::ACCEPT_LANGUAGE)?.to_str().ok()?;
    let mut langs: Vec<(f32, Locale)> = raw
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut it = part.trim().split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let primary = tag.split('-').next()?;
            let loc = primary.parse::<Locale>().ok()?;
            // Stable: equal weights keep their order.
            Some((q - i as f32 * 1e-4, loc))
        })
        .collect();
    langs.sort_by(|a, b| b.0.total_cmp(&a.0));
    langs.first().map(|l| l.1)
}

/// What went wrong, in words the visitor can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    BadLink,
    ExpiredLink,
    Invalid(String),
    NotFound,
    TooMany,
    Unavailable,
}

/// The one error type of the handlers.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub locale: Locale,
    pub problem: Problem,
    pub brand: String,
    internal: Option<anyhow::Error>,
}

impl AppError {
    pub fn new(status: StatusCode, locale: Locale, problem: Problem) -> AppError {
        AppError {
            status,
            locale,
            problem,
            brand: String::new(),
            internal: None,
        }
    }

    /// A failure of ours: logged with its cause, shown as "try later".
    pub fn internal(e: anyhow::Error) -> AppError {
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            locale: Locale::default(),
            problem: Problem::Unavailable,
            brand: String::new(),
            internal: Some(e),
        }
    }

    pub fn in_locale(mut self, locale: Locale) -> AppError {
        self.locale = locale;
        self
    }

    pub fn for_brand(mut self, brand: &str) -> AppError {
        self.brand = brand.to_string();
        self
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> AppError {
        AppError::internal(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.internal {
                Some(e) => {
                    tracing::error!(status = %self.status, error = %format!("{e:#}"), "request failed")
                }
                None => tracing::error!(status = %self.status, "request failed"),
            }
        }
        let w = pages::words(self.locale);
        let (title, text) = match &self.problem {
            Problem::BadLink => (w.bad_link_title, w.bad_link.to_string()),
            Problem::ExpiredLink => (w.bad_link_title, w.expired_link.to_string()),
            Problem::Invalid(msg) => (w.invalid_title, msg.clone()),
            Problem::NotFound => (w.not_found_title, w.not_found.to_string()),
            Problem::TooMany => (w.too_many_title, w.too_many.to_string()),
            Problem::Unavailable => (w.unavailable_title, w.unavailable.to_string()),
        };
        let page = pages::message(self.locale, &self.brand, title, &text);
        let mut res = (self.status, Html(page.into_string())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        res
    }
}

/// A page answer with its status.
pub fn page(status: StatusCode, markup: maud::Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// 200 and a page with a title and one paragraph: what an action did.
pub fn done_page(
    state: &AppState,
    locale: crate::domain::Locale,
    title: &str,
    text: &str,
) -> Response {
    page(
        StatusCode::OK,
        pages::message(locale, state.brand(), title, text),
    )
}

// ---------------------------------------------------------------------------
// Tokens: the signing lives in `crate::deliver::token` (HMAC under
// `config::Secret`, checked in constant time); these are the only places the
// HTTP side touches it.
// ---------------------------------------------------------------------------

/// Why a confirmation token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Invalid,
    Expired,
}

/// Whom a genuine unsubscribe token names.
pub(crate) fn verify_unsubscribe_token(
    state: &AppState,
    token: &str,
) -> Option<crate::deliver::token::LinkSubject> {
    crate::deliver::token::verify_unsubscribe(&state.secret, &state.cfg.list_id(), token).ok()
}

/// A signed confirmation token for `email`, valid until `expires`.
pub(crate) fn confirm_token(
    state: &AppState,
    email: &SubscriberEmail,
    expires: DateTime<Utc>,
) -> anyhow::Result<String> {
    Ok(crate::deliver::token::confirm_token(
        &state.secret,
        email.as_str(),
        expires,
    ))
}

/// The address a confirmation token was issued for, if it is genuine and not expired at `now`.
pub(crate) fn verify_confirm_token(
    state: &AppState,
    token: &str,
    now: DateTime<Utc>,
) -> Result<SubscriberEmail, TokenProblem> {
    use crate::deliver::token::{verify_confirm, TokenError};
    match verify_confirm(&state.secret, token, now) {
        Ok(e) => SubscriberEmail::parse(&e).map_err(|_| TokenProblem::Invalid),
        Err(TokenError::Expired) => Err(TokenProblem::Expired),
        Err(_) => Err(TokenProblem::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn accept_language_picks_the_best_language_the_pages_speak() {
        assert_eq!(
            accept_language(&h("de-DE,en;q=0.8,fr;q=0.5")),
            Some(Locale::En)
        );
        assert_eq!(
            accept_language(&h("fr-CA,fr;q=0.9,en;q=0.8")),
            Some(Locale::Fr)
        );
        assert_eq!(accept_language(&h("en;q=0.3,fr;q=0.7")), Some(Locale::Fr));
        assert_eq!(accept_language(&h("de,it")), None);
    }
}
