//! The web archive: `GET /archive` (newest first), `GET /archive/{date}` (the
//! public email, target of "view in browser"), `GET /archive/feed.xml` (Atom).
//!
//! Only the public rendering is served: no name, no token, no address. An issue
//! shows up once its send time has passed, never before its subscribers get it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use maud::html;

use super::{page, pages, AppError, AppState, PageLocale, Problem};
use crate::domain::{local_instant, Digest};

/// How many issues the index and the feed list.
const LISTED: usize = 60;

/// Whether the issue of `date` is public: its send time has passed.
fn is_out(state: &AppState, date: NaiveDate) -> bool {
    let n = &state.cfg.newsletter;
    local_instant(date, n.send_time.0, n.timezone.0) <= state.now()
}

/// Issues already sent (their send time passed), newest first, with their
/// digest: from the database, where they are frozen, so that every instance
/// shows the same ones whatever its working folder.
async fn published(state: &AppState) -> Result<Vec<Digest>, AppError> {
    let out: Vec<NaiveDate> = state.store(|s| s.issues().frozen_dates()).await?;
    let dates: Vec<NaiveDate> = out
        .into_iter()
        .filter(|d| is_out(state, *d))
        .take(LISTED)
        .collect();
    let kept = state
        .store(move |s| {
            let issues = s.issues();
            let mut out = Vec::new();
            for d in dates {
                out.extend(issues.frozen_issue(d)?);
            }
            Ok(out)
        })
        .await?;
    Ok(kept
        .iter()
        .map(|k| k.digest())
        .collect::<anyhow::Result<Vec<_>>>()?)
}

fn top_title(d: &Digest) -> &str {
    d.stories
        .first()
        .map(|s| s.article.title.as_str())
        .unwrap_or("")
}

pub async fn index(State(state): State<AppState>, lang: PageLocale) -> Result<Response, AppError> {
    let locale = lang.0;
    let issues = published(&state)
        .await
        .map_err(|e| e.in_locale(locale).for_brand(state.brand()))?;
    let w = pages::words(locale);
    let markup = pages::layout_with_feed(
        locale,
        state.brand(),
        w.archive_title,
        Some("archive/feed.xml"),
        html! {
            h1 { (w.archive_title) }
            @if issues.is_empty() {
                p { (w.archive_empty) }
            } @else {
                ul.issues {
                    @for d in &issues {
                        li {
                            a href=(format!("archive/{}", d.date)) { (top_title(d)) }
                            span.d { time datetime=(d.date) { (state.assets.strings(locale).format_date(d.date)) } " · " (d.stories.len()) " " (w.stories) " · ≈ " (d.reading_minutes) " min" }
                        }
                    }
                }
            }
            p.fine { a href="archive/feed.xml" { (w.archive_feed) } }
        },
    );
    // Relative links resolve against /archive (no trailing slash) as the parent folder.
    let mut res = page(StatusCode::OK, markup);
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(res)
}

pub async fn issue(
    State(state): State<AppState>,
    lang: PageLocale,
    Path(date): Path<String>,
) -> Result<Response, AppError> {
    let not_found =
        || AppError::new(StatusCode::NOT_FOUND, lang.0, Problem::NotFound).for_brand(state.brand());
    let date = NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|_| not_found())?;
    if !is_out(&state, date) {
        return Err(not_found());
    }
    let kept = state
        .store(move |s| s.issues().frozen_issue(date).map(|k| k.map(|k| k.html)))
        .await
        .map_err(|e| e.in_locale(lang.0).for_brand(state.brand()))?;
    let html = kept.ok_or_else(not_found)?;
    let mut res = (StatusCode::OK, axum::response::Html(html)).into_response();
    let h = res.headers_mut();
    // The email is static: no script may run in it, whatever a feed slipped through.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'",
        ),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(res)
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// The Atom document of `issues` (newest first).
pub fn atom(
    name: &str,
    tagline: &str,
    base_url: &str,
    issues: &[Digest],
    now: DateTime<Utc>,
) -> String {
    let updated = issues.first().map(|d| d.built_at).unwrap_or(now);
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    out.push_str(&format!("  <title>{}</title>\n", xml(name)));
    if !tagline.is_empty() {
        out.push_str(&format!("  <subtitle>{}</subtitle>\n", xml(tagline)));
    }
    out.push_str(&format!("  <id>{}/archive</id>\n", xml(base_url)));
    out.push_str(&format!(
        "  <link rel=\"self\" href=\"{}/archive/feed.xml\"/>\n",
        xml(base_url)
    ));
    out.push_str(&format!(
        "  <link rel=\"alternate\" type=\"text/html\" href=\"{}/archive\"/>\n",
        xml(base_url)
    ));
    out.push_str(&format!(
        "  <updated>{}</updated>\n",
        updated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    out.push_str(&format!("  <author><name>{}</name></author>\n", xml(name)));
    for d in issues {
        let url = format!("{}/archive/{}", base_url, d.date);
        let summary: Vec<&str> = d.stories.iter().map(|s| s.article.title.as_str()).collect();
        out.push_str("  <entry>\n");
        out.push_str(&format!(
            "    <title>{} · {} · {}</title>\n",
            xml(name),
            d.date,
            xml(top_title(d))
        ));
        out.push_str(&format!("    <id>{}</id>\n", xml(&url)));
        out.push_str(&format!(
            "    <link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>\n",
            xml(&url)
        ));
        out.push_str(&format!(
            "    <updated>{}</updated>\n",
            d.built_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        out.push_str(&format!(
            "    <summary>{}</summary>\n",
            xml(&summary.join(" · "))
        ));
        out.push_str("  </entry>\n");
    }
    out.push_str("</feed>\n");
    out
}

pub async fn feed(State(state): State<AppState>, lang: PageLocale) -> Result<Response, AppError> {
    let issues = published(&state)
        .await
        .map_err(|e| e.in_locale(lang.0).for_brand(state.brand()))?;
    let n = &state.cfg.newsletter;
    let body = atom(&n.name, &n.tagline, state.base_url(), &issues, state.now());
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/atom+xml; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_text_is_escaped() {
        assert_eq!(xml("a<b>&\"c'\u{1}"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }
}
