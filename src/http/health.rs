//! `GET /healthz` (the store answers; the last run and its status) and
//! `GET /metrics` (Prometheus text format).
//!
//! Health is 503 only when the store does not answer: a failed send is shown in
//! the body and in the metrics, but it is no reason for a load balancer to stop
//! routing the unsubscribe links.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

pub async fn healthz(State(state): State<AppState>) -> Response {
    let checked = state.store(|s| Ok((s.ping(), s.last_run()))).await;
    let (status, body) = match checked {
        Ok((Ok(()), last)) => {
            let last = match last {
                Ok(Some(r)) => json!({
                    "date": r.date.to_string(),
                    "status": r.status,
                    "started_at": r.started_at.to_rfc3339(),
                    "finished_at": r.finished_at.to_rfc3339(),
                    "sent": r.sent,
                    "failed": r.failed,
                    "in_doubt": r.in_doubt,
                }),
                Ok(None) => serde_json::Value::Null,
                Err(e) => {
                    tracing::warn!(error = %e, "health check: could not read the last run");
                    json!({"error": "could not read the last run"})
                }
            };
            (
                StatusCode::OK,
                json!({"status": "ok", "store": "ok", "last_run": last}),
            )
        }
        Ok((Err(e), _)) => {
            tracing::error!(error = %e, "health check: store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "store": "unreachable"}),
            )
        }
        Err(e) => {
            let cause = e.cause().map(|c| format!("{c:#}")).unwrap_or_default();
            tracing::error!(error = %cause, "health check: the store call failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "unavailable", "store": "unreachable"}),
            )
        }
    };
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Whether the request may read `/metrics` on this listener.
fn allowed(state: &AppState, parts: &axum::http::request::Parts) -> bool {
    use super::MetricsAccess;
    match &state.metrics_access {
        MetricsAccess::Open => true,
        MetricsAccess::Elsewhere => false,
        MetricsAccess::Token(t) => parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| {
                use subtle::ConstantTimeEq;
                bool::from(given.trim().as_bytes().ct_eq(t.as_bytes()))
            }),
        MetricsAccess::LocalOnly => {
            let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
                .iter()
                .any(|h| parts.headers.contains_key(*h));
            let local = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .is_some_and(|c| c.0.ip().is_loopback());
            local && !forwarded
        }
    }
}

pub async fn metrics(State(state): State<AppState>, parts: axum::http::request::Parts) -> Response {
    if !allowed(&state, &parts) {
        // Subscriber counts are nobody's business but the operator's.
        return super::AppError::new(
            StatusCode::NOT_FOUND,
            state.cfg.newsletter.locale,
            super::Problem::NotFound,
        )
        .for_brand(state.brand())
        .into_response();
    }
    let (counts, last, bounces) = match state
        .store(|s| {
            Ok((
                s.count_by_status()?,
                s.last_run()?,
                s.bounces().bounce_totals()?,
            ))
        })
        .await
    {
        Ok(v) => v,
        Err(e) => return e.for_brand(state.brand()).into_response(),
    };
    let mut body = state.metrics.render(&counts, last.as_ref());
    body.push_str(&crate::metrics::bounce_lines(&bounces));
    let mut res = (StatusCode::OK, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
