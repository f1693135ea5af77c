//! Bounce and complaint reports posted by relays: `POST /webhooks/ses` (Amazon SES
//! through SNS, signature checked) and `POST /webhooks/postmark` (basic auth).
//! Each answers 404 until its `[bounces]` keys are set.
//!
//! A report that is refused (bad signature, wrong credentials) is answered 401/403
//! and changes nothing; one that is read is answered 200 even when it matched no
//! message of ours (it is logged and said in the answer), so the relay does not
//! retry it forever; a store failure is 503, and the relay retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::AppState;
use crate::bounces::postmark::{self, BasicAuth};
use crate::bounces::sns::{CertificateFileError, Kind, Verifier};
use crate::bounces::webhook::{self, Provider, ProviderEvent};
use crate::bounces::{ses, Outcome};
use crate::config::{Config, PrivateFileError};

/// Largest report read: SNS messages are at most 256 KiB; Postmark's with the
/// bounce's full content are about as large.
pub const MAX_BODY: usize = 512 * 1024;

/// The webhooks `[bounces]` turns on, loaded when the service starts.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    pub ses: Option<Verifier>,
    pub postmark: Option<BasicAuth>,
}

/// Why the webhooks `[bounces]` sets up cannot be served; each names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error(transparent)]
    SesCertificate(#[from] CertificateFileError),
    #[error(transparent)]
    PasswordFile(#[from] PrivateFileError),
    #[error(
        "{env} is not set: it holds the password Postmark's webhook gives \
         (bounces.postmark_password_env)"
    )]
    PasswordEnvUnset { env: String },
}

impl Webhooks {
    /// Reads the pinned certificate and the Postmark password (from its file, or from
    /// the environment through `var`). The error names the key to fix.
    pub fn from_config_with(
        cfg: &Config,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Webhooks, WebhookSetupError> {
        let b = &cfg.bounces;
        let ses = match &b.ses_certificate {
            Some(p) => Some(Verifier::load(&cfg.resolve(p), b.ses_topic_arns.clone())?),
            None => None,
        };
        let password = match (&b.postmark_password_file, &b.postmark_password_env) {
            (Some(file), _) => Some(
                crate::config::read_private_lines(
                    &cfg.resolve(file),
                    "bounces.postmark_password_file",
                    "Put the password Postmark's webhook gives on its first line, then `chmod 600` it",
                )?
                .remove(0),
            ),
            (None, Some(env)) => Some(
                var(env)
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| WebhookSetupError::PasswordEnvUnset { env: env.clone() })?,
            ),
            (None, None) => None,
        };
        let postmark = b
            .postmark_user
            .clone()
            .zip(password)
            .map(|(user, password)| BasicAuth::new(user, password));
        Ok(Webhooks { ses, postmark })
    }

    pub fn from_config(cfg: &Config) -> Result<Webhooks, WebhookSetupError> {
        Webhooks::from_config_with(cfg, |n| std::env::var(n).ok())
    }
}

/// Where the webhooks are: these paths read bodies up to [`MAX_BODY`].
pub const PREFIX: &str = "/webhooks/";

/// The webhook routes, with their own body limit.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/ses", post(ses_sns))
        .route("/webhooks/postmark", post(postmark))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

async fn postmark(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(auth) = &s.webhooks.postmark else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !auth.accepts(given) {
        tracing::warn!("postmark webhook: refused a request without the right credentials");
        s.metrics.webhook_refused(Provider::Postmark);
        return (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"digestif webhooks\"",
            )],
            "credentials required\n",
        )
            .into_response();
    }
    match postmark::parse(&body) {
        Ok(ev) => apply(&s, Provider::Postmark, vec![ev]).await,
        Err(e) => {
            tracing::warn!("postmark webhook: {e}");
            text(StatusCode::BAD_REQUEST, format!("{e}\n"))
        }
    }
}

async fn ses_sns(State(s): State<AppState>, body: Bytes) -> Response {
    let Some(verifier) = &s.webhooks.ses else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let env = match verifier.verify(&body, s.now()) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!("ses webhook: refused: {e}");
            s.metrics.webhook_refused(Provider::Ses);
            return text(StatusCode::FORBIDDEN, format!("refused: {e}\n"));
        }
    };
    match env.kind() {
        Some(Kind::SubscriptionConfirmation) => {
            // The service may not reach the internet: the operator confirms.
            let url = env.subscribe_url.unwrap_or_default();
            tracing::warn!(
                topic = %env.topic_arn,
                "ses webhook: SNS asks to confirm the subscription of this endpoint to {}: \
                 open this address once (e.g. `curl '{url}'`) to start receiving notifications",
                env.topic_arn
            );
            text(
                StatusCode::OK,
                "subscription noted: the operator confirms it with the SubscribeURL in the log\n",
            )
        }
        Some(Kind::UnsubscribeConfirmation) => {
            tracing::warn!(topic = %env.topic_arn, "ses webhook: this endpoint was unsubscribed from {}", env.topic_arn);
            text(StatusCode::OK, "unsubscription noted\n")
        }
        Some(Kind::Notification) => match ses::parse(&env.message) {
            Ok(events) => apply(&s, Provider::Ses, events).await,
            Err(e) => {
                tracing::warn!(sns_message = %env.message_id, "ses webhook: {e}");
                // Signed by SNS yet not SES's: retrying would not help.
                text(StatusCode::OK, format!("ignored: {e}\n"))
            }
        },
        None => text(StatusCode::BAD_REQUEST, "unknown SNS message type\n"),
    }
}

/// Matches and keeps `events`, logs each outcome, and answers with them.
async fn apply(s: &AppState, provider: Provider, events: Vec<ProviderEvent>) -> Response {
    let rules = s.cfg.bounces.rules();
    let now = s.now();
    let result = s
        .store(move |store| {
            events
                .iter()
                .map(|ev| webhook::record(store.bounces(), &rules, provider, ev, now))
                .collect::<Result<Vec<Outcome>, _>>()
        })
        .await;
    match result {
        Ok(outcomes) => {
            for o in &outcomes {
                if o.is_suspect() {
                    tracing::warn!("{} webhook: {o}", provider.as_str());
                } else {
                    tracing::info!("{} webhook: {o}", provider.as_str());
                }
            }
            text(StatusCode::OK, webhook::describe(&outcomes))
        }
        Err(e) => {
            let cause = e
                .cause()
                .map(|c| format!("{c:#}"))
                .unwrap_or_else(|| "no cause given".into());
            tracing::error!(
                error = %cause,
                "{} webhook: the store failed ({cause}); the relay will retry",
                provider.as_str()
            );
            text(StatusCode::SERVICE_UNAVAILABLE, "try again later\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(dir: &std::path::Path, bounces: &str) -> Config {
        let text = format!(
            "[newsletter]\nname = \"N\"\ntagline = \"T\"\nlocale = \"fr\"\ntimezone = \"Europe/Paris\"\nbase_url = \"https://news.example.com\"\n\n\
             [[sources]]\nname = \"M\"\npath = \"m.xml\"\ncategory = \"M\"\n\n\
             [bounces]\npostmark_user = \"postmark\"\n{bounces}\n"
        );
        Config::parse(&text, dir).unwrap()
    }

    fn accepts(hooks: &Webhooks, password: &str) -> bool {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("postmark:{password}"));
        hooks
            .postmark
            .as_ref()
            .unwrap()
            .accepts(Some(&format!("Basic {b64}")))
    }

    #[test]
    fn the_postmark_password_comes_from_a_private_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("postmark.secret");
        std::fs::write(&file, "# Postmark webhook\n  from-the-file-123  \n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_file = config(dir.path(), "postmark_password_file = \"postmark.secret\"");
        let hooks = Webhooks::from_config_with(&from_file, |_| None).unwrap();
        assert!(accepts(&hooks, "from-the-file-123"));
        assert!(!accepts(&hooks, "  from-the-file-123  "));

        // A file others can read is refused, naming the key, the file and the fix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Webhooks::from_config_with(&from_file, |_| None).unwrap_err();
        assert!(
            matches!(
                e,
                WebhookSetupError::PasswordFile(PrivateFileError::Exposed { .. })
            ),
            "{e}"
        );
        let e = e.to_string();
        assert!(
            e.contains("bounces.postmark_password_file")
                && e.contains("postmark.secret can be read by other users (mode 644)")
                && e.contains("chmod 600"),
            "{e}"
        );
        std::fs::remove_file(&file).unwrap();
        let e = Webhooks::from_config_with(&from_file, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("bounces.postmark_password_file "), "{e}");

        let from_env = config(dir.path(), "postmark_password_env = \"PM\"");
        let hooks =
            Webhooks::from_config_with(&from_env, |n| (n == "PM").then(|| "from-env-456".into()))
                .unwrap();
        assert!(accepts(&hooks, "from-env-456"));
        let e = Webhooks::from_config_with(&from_env, |_| None).unwrap_err();
        assert!(
            matches!(&e, WebhookSetupError::PasswordEnvUnset { env } if env == "PM"),
            "{e}"
        );
        assert!(e.to_string().contains("PM is not set"), "{e}");
    }
}
