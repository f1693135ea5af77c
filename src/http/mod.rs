//! The HTTP side of the service: unsubscribe, sign-up, archive, health, metrics.
//!
//! [`router`] builds the whole app without a socket, so tests can serve it on
//! any port. Handlers are thin: they parse, call the store (on the blocking
//! pool: the store is sync), and render a page. One error type, [`AppError`],
//! turns into a page: 4xx are the visitor's business and not logged, 5xx are
//! logged and never show internals.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::clock::Clock;
use crate::config::{Config, Secret};
use crate::domain::{Locale, SubscriberEmail};
use crate::store::Store;

pub mod archive;
pub mod fields;
pub mod health;
pub mod limit;
pub mod mail;
pub mod pages;
pub mod preferences;
pub mod server;
pub mod subscribe;
pub mod unsubscribe;
pub mod webhooks;

use crate::metrics::Metrics;

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
    limiter: Arc<limit::Limiter>,
    trusted_proxies: Arc<Vec<limit::Cidr>>,
    /// Who may read `/metrics` on this listener.
    pub metrics_access: MetricsAccess,
    /// The relays' report webhooks `[bounces]` turns on.
    pub webhooks: Arc<webhooks::Webhooks>,
}

/// Who may read `/metrics` (subscriber counts) on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAccess {
    /// The separate metrics listener (`[server] metrics_listen`): everyone who reaches it.
    Open,
    /// Only with `Authorization: Bearer <token>` (`DIGESTIF_METRICS_TOKEN`).
    Token(String),
    /// Only a client on this machine, not through a proxy.
    LocalOnly,
    /// Not on this listener (it is on `metrics_listen`).
    Elsewhere,
}

impl MetricsAccess {
    pub const TOKEN_ENV: &'static str = "DIGESTIF_METRICS_TOKEN";

    /// The public listener's rule for `cfg`, the token read from the environment.
    pub fn public(cfg: &Config) -> MetricsAccess {
        if cfg.server.metrics_listen.is_some() {
            return MetricsAccess::Elsewhere;
        }
        match std::env::var(Self::TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => MetricsAccess::Token(t.trim().to_string()),
            _ => MetricsAccess::LocalOnly,
        }
    }
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
        // `serve` has loaded the templates once already and stops on an error.
        let assets =
            crate::pipeline::assets(&cfg).unwrap_or_else(|_| crate::render::Assets::builtin());
        let trusted = cfg
            .server
            .trusted_proxies
            .iter()
            .filter_map(|p| limit::Cidr::parse(p).ok())
            .collect();
        AppState {
            limiter: Arc::new(limit::Limiter::new(
                cfg.server.subscribe_per_minute,
                chrono::Duration::minutes(1),
            )),
            trusted_proxies: Arc::new(trusted),
            metrics_access: MetricsAccess::public(&cfg),
            // `serve` has loaded them once already and stops on an error.
            webhooks: Arc::new(webhooks::Webhooks::from_config(&cfg).unwrap_or_default()),
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
            .map_err(|e| match e {
                // Another process held the write lock past the wait: "try again
                // shortly" (503 + Retry-After), never a bare 500.
                crate::store::StoreError::Busy(_) => AppError::busy(e),
                e => AppError::internal(anyhow::anyhow!(e)),
            })
    }
}

/// Largest request body a route reads: the forms are a few hundred bytes.
pub const MAX_BODY: usize = 16 * 1024;

/// The whole app.
pub fn router(state: AppState) -> Router {
    let timeout = std::time::Duration::from_secs(state.cfg.server.request_timeout_s.max(1));
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
        .merge(webhooks::router())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                // A body announced too large is refused before a byte of it is read.
                let announced = req
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let limit = if req.uri().path().starts_with(webhooks::PREFIX) {
                    webhooks::MAX_BODY
                } else {
                    MAX_BODY
                };
                if announced.is_some_and(|n| n > limit as u64) {
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        [(header::CONNECTION, "close")],
                        "request body too large\n",
                    )
                        .into_response();
                }
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(res) => res,
                    Err(_) => (
                        StatusCode::REQUEST_TIMEOUT,
                        [(header::CONNECTION, "close")],
                        "request timed out\n",
                    )
                        .into_response(),
                }
            },
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// The router of `[server] metrics_listen`: `/metrics` and `/healthz` only, open
/// to whoever reaches that address.
pub fn metrics_router(mut state: AppState) -> Router {
    state.metrics_access = MetricsAccess::Open;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .fallback(not_found)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Marks a response as one that other sites may show in a frame (the sign-up form).
#[derive(Debug, Clone, Copy)]
pub struct Embeddable;

/// The Content-Security-Policy of the pages: nothing from elsewhere, no plugin,
/// forms post here only, inline styles, and the one inline script of the
/// sign-up form by its hash.
fn page_csp(frame_ancestors: bool) -> HeaderValue {
    use std::sync::OnceLock;
    static CSP: OnceLock<(HeaderValue, HeaderValue)> = OnceLock::new();
    let (strict, embeddable) = CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(subscribe::TZ_SCRIPT.as_bytes()));
        let base = format!(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             script-src 'sha256-{hash}'; form-action 'self'; base-uri 'none'"
        );
        (
            HeaderValue::from_str(&format!("{base}; frame-ancestors 'none'")).expect("ASCII"),
            HeaderValue::from_str(&base).expect("ASCII"),
        )
    });
    if frame_ancestors {
        strict.clone()
    } else {
        embeddable.clone()
    }
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
    // Every page may not be framed (clickjacking on the unsubscribe and
    // preferences buttons), except the sign-up form, which newsrooms embed.
    let embeddable = res.extensions().get::<Embeddable>().is_some();
    let h = res.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, page_csp(!embeddable));
    } else if !embeddable {
        // A route's own policy (the archive) gets the frame rule added.
        let own = h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap_or("")
            .to_string();
        if !own.contains("frame-ancestors") {
            if let Ok(v) = HeaderValue::from_str(&format!("{own}; frame-ancestors 'none'")) {
                h.insert(header::CONTENT_SECURITY_POLICY, v);
            }
        }
    }
    if !embeddable {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

/// The client's address: the connection's peer, or, when the peer is one of
/// `[server] trusted_proxies`, the address that proxy says it served.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| limit::client_ip(c.0.ip(), &parts.headers, &s.trusted_proxies)),
        ))
    }
}

/// `?lang=` of a page's address.
#[derive(Debug, Default, serde::Deserialize)]
struct LangField {
    lang: Option<String>,
}

/// The page language when no subscriber is known: `?lang=`, else Accept-Language,
/// else the newsletter's locale.
#[derive(Debug, Clone, Copy)]
pub struct PageLocale(pub Locale);

impl FromRequestParts<AppState> for PageLocale {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let from_query = fields::queried::<LangField>(&parts.uri)
            .lang
            .and_then(|v| v.parse::<Locale>().ok());
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

    /// The store was busy past the wait: 503 with Retry-After, logged as a warning.
    pub fn busy(e: crate::store::StoreError) -> AppError {
        tracing::warn!(error = %e, "database busy: answered 503");
        AppError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            locale: Locale::default(),
            problem: Problem::Unavailable,
            brand: String::new(),
            internal: Some(anyhow::Error::new(e)),
        }
    }

    /// What failed on our side, for a log line (none for the visitor's own mistakes).
    pub fn cause(&self) -> Option<&anyhow::Error> {
        self.internal.as_ref()
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
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
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
        match self.status {
            StatusCode::TOO_MANY_REQUESTS => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
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
    fn a_busy_or_failed_store_call_keeps_its_cause_for_the_log() {
        use crate::store::StoreError;
        let busy = AppError::busy(StoreError::Busy("database is locked".into()));
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        let words = format!("{:#}", busy.cause().expect("a cause"));
        assert!(words.contains("database is locked"), "{words}");
        let failed = AppError::internal(anyhow::anyhow!(StoreError::Db("disk I/O error".into())));
        let words = format!("{:#}", failed.cause().expect("a cause"));
        assert!(words.contains("disk I/O error"), "{words}");
        let visitor = AppError::new(StatusCode::BAD_REQUEST, Locale::En, Problem::BadLink);
        assert!(visitor.cause().is_none());
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
