//! The I/O edge of ingestion: reading a feed from a file or over HTTP(S) with a
//! timeout, a size cap, bounded redirects, a clear User-Agent and conditional GET.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::StatusCode;
use tokio::io::AsyncReadExt;

use crate::config::Fetch;

use super::cache::CachedFeed;

const ACCEPT_FEEDS: &str = "application/rss+xml, application/atom+xml, application/feed+json, \
     application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5";

/// What a fetch brought back.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// A fresh body; `cache` is set when the server gave validators to reuse.
    Body {
        bytes: Vec<u8>,
        cache: Option<CachedFeed>,
    },
    /// 304 Not Modified: the cached body is still current.
    NotModified { bytes: Vec<u8> },
}

impl Fetched {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Fetched::Body { bytes, .. } | Fetched::NotModified { bytes } => bytes,
        }
    }
}

/// Why a feed could not be read. The message names the file, the HTTP status
/// or the `[fetch]` key to look at.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot open {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "the feed is larger than fetch.max_bytes ({max_bytes} bytes); \
         raise fetch.max_bytes if this feed is legitimate"
    )]
    TooBig { max_bytes: u64 },
    #[error(
        "the server answered 304 Not Modified to a request that was not \
         conditional; delete the fetch cache file and retry"
    )]
    NotModifiedUnasked,
    #[error("HTTP {status}{}", if status.is_server_error() {
        " (the server failed; it may work next time)"
    } else {
        ""
    })]
    Status { status: StatusCode },
    #[error("no complete answer within {timeout_s} s (fetch.timeout_s)")]
    Timeout { timeout_s: u64 },
    #[error("too many redirects (more than fetch.max_redirects = {max_redirects})")]
    TooManyRedirects { max_redirects: usize },
    #[error("cannot connect: {cause}")]
    Connect { cause: String },
    #[error("{cause}")]
    Transport { cause: String },
}

/// The HTTP client could not be built; every URL source of the run reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientError(Arc<reqwest::Error>);

/// The HTTP client for a run: timeout, redirects and User-Agent from `[fetch]`.
pub fn client(f: &Fetch) -> Result<reqwest::Client, ClientError> {
    let mut headers = HeaderMap::new();
    headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_FEEDS));
    reqwest::Client::builder()
        .user_agent(f.user_agent.clone())
        .default_headers(headers)
        .timeout(Duration::from_secs(f.timeout_s.max(1)))
        .connect_timeout(Duration::from_secs(f.timeout_s.clamp(1, 10)))
        .redirect(reqwest::redirect::Policy::limited(f.max_redirects))
        .build()
        .map_err(|e| ClientError(Arc::new(e)))
}

/// Reads a feed file, refusing one larger than `max_bytes`.
pub async fn read_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FetchError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|error| FetchError::Open {
            path: path.to_path_buf(),
            error,
        })?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|error| FetchError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    if bytes.len() as u64 > max_bytes {
        return Err(FetchError::TooBig { max_bytes });
    }
    Ok(bytes)
}

/// GETs `url`, conditionally when `cached` has validators, streaming the body
/// and stopping as soon as it passes `max_bytes`.
pub async fn fetch_url(
    client: &reqwest::Client,
    url: &str,
    cached: Option<&CachedFeed>,
    f: &Fetch,
) -> Result<Fetched, FetchError> {
    let mut req = client.get(url);
    if let Some(c) = cached {
        if let Some(etag) = &c.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &c.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
    }
    let mut resp = req.send().await.map_err(|e| describe(&e, f))?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED {
        return match cached.and_then(CachedFeed::body_bytes) {
            Some(bytes) => Ok(Fetched::NotModified { bytes }),
            None => Err(FetchError::NotModifiedUnasked),
        };
    }
    if !status.is_success() {
        return Err(FetchError::Status { status });
    }
    if resp.content_length().is_some_and(|n| n > f.max_bytes) {
        return Err(FetchError::TooBig {
            max_bytes: f.max_bytes,
        });
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_string)
    };
    let etag = header(ETAG);
    let last_modified = header(LAST_MODIFIED);
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, f))? {
        if (bytes.len() + chunk.len()) as u64 > f.max_bytes {
            return Err(FetchError::TooBig {
                max_bytes: f.max_bytes,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    let cache = (etag.is_some() || last_modified.is_some())
        .then(|| CachedFeed::new(etag, last_modified, &bytes));
    Ok(Fetched::Body { bytes, cache })
}

/// A transport error in words, with the config key to look at.
fn describe(e: &reqwest::Error, f: &Fetch) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout {
            timeout_s: f.timeout_s,
        }
    } else if e.is_redirect() {
        FetchError::TooManyRedirects {
            max_redirects: f.max_redirects,
        }
    } else if e.is_connect() {
        FetchError::Connect { cause: chain(e) }
    } else {
        FetchError::Transport { cause: chain(e) }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::get;
    use axum::Router;

    #[derive(Default)]
    struct Seen {
        hits: AtomicUsize,
        user_agent: Mutex<Option<String>>,
        if_none_match: Mutex<Option<String>>,
    }

    async fn feed(State(seen): State<Arc<Seen>>, h: AxHeaders) -> Response {
        seen.hits.fetch_add(1, Ordering::SeqCst);
        *seen.user_agent.lock().unwrap() =
            h.get("user-agent").map(|v| v.to_str().unwrap().to_string());
        let inm = h
            .get("if-none-match")
            .map(|v| v.to_str().unwrap().to_string());
        *seen.if_none_match.lock().unwrap() = inm.clone();
        if inm.as_deref() == Some("\"v1\"") {
            return AxStatus::NOT_MODIFIED.into_response();
        }
        ([("etag", "\"v1\"")], "<rss/>").into_response()
    }

    async fn serve() -> (String, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let app = Router::new()
            .route("/feed", get(feed))
            .route("/loop", get(|| async { Redirect::temporary("/loop") }))
            .route("/moved", get(|| async { Redirect::permanent("/feed") }))
            .route("/huge", get(|| async { "x".repeat(10_000) }))
            .route("/gone", get(|| async { AxStatus::NOT_FOUND }))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn settings() -> Fetch {
        Fetch {
            max_bytes: 1000,
            max_redirects: 3,
            user_agent: "digestif-test/1".into(),
            ..Fetch::default()
        }
    }

    #[tokio::test]
    async fn conditional_get_reuses_the_cached_body_on_304() {
        let (base, seen) = serve().await;
        let f = settings();
        let c = client(&f).unwrap();
        let url = format!("{base}/feed");
        let first = fetch_url(&c, &url, None, &f).await.unwrap();
        let Fetched::Body { bytes, cache } = first else {
            panic!("expected a body")
        };
        assert_eq!(bytes, b"<rss/>");
        let cache = cache.expect("the ETag is remembered");
        assert_eq!(cache.etag.as_deref(), Some("\"v1\""));
        assert_eq!(
            seen.user_agent.lock().unwrap().as_deref(),
            Some("digestif-test/1")
        );
        let second = fetch_url(&c, &url, Some(&cache), &f).await.unwrap();
        assert_eq!(
            second,
            Fetched::NotModified {
                bytes: b"<rss/>".to_vec()
            }
        );
        assert_eq!(
            seen.if_none_match.lock().unwrap().as_deref(),
            Some("\"v1\"")
        );
        assert_eq!(seen.hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn redirects_are_followed_but_bounded() {
        let (base, _) = serve().await;
        let f = settings();
        let c = client(&f).unwrap();
        let ok = fetch_url(&c, &format!("{base}/moved"), None, &f)
            .await
            .unwrap();
        assert_eq!(ok.bytes(), b"<rss/>");
        let e = fetch_url(&c, &format!("{base}/loop"), None, &f)
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            FetchError::TooManyRedirects { max_redirects: 3 }
        ));
        assert!(e.to_string().contains("too many redirects"), "{e}");
    }

    #[tokio::test]
    async fn oversized_bodies_and_http_errors_are_refused_with_the_cause() {
        let (base, _) = serve().await;
        let f = settings();
        let c = client(&f).unwrap();
        let e = fetch_url(&c, &format!("{base}/huge"), None, &f)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("fetch.max_bytes"), "{e}");
        let e = fetch_url(&c, &format!("{base}/gone"), None, &f)
            .await
            .unwrap_err();
        assert!(
            matches!(e, FetchError::Status { status } if status == StatusCode::NOT_FOUND),
            "{e:?}"
        );
        assert!(e.to_string().contains("404"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connection_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let f = settings();
        let c = client(&f).unwrap();
        let e = fetch_url(&c, &format!("http://{addr}/feed"), None, &f)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Connect { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot connect"), "{e}");
    }

    #[tokio::test]
    async fn files_over_the_cap_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.xml");
        std::fs::write(&p, vec![b'x'; 2000]).unwrap();
        let e = read_file(&p, 1000).await.unwrap_err();
        assert!(matches!(e, FetchError::TooBig { max_bytes: 1000 }), "{e:?}");
        assert!(e.to_string().contains("fetch.max_bytes"), "{e}");
        assert_eq!(read_file(&p, 2000).await.unwrap().len(), 2000);
        let e = read_file(&dir.path().join("missing.xml"), 1000)
            .await
            .unwrap_err();
        assert!(matches!(&e, FetchError::Open { path, .. } if path.ends_with("missing.xml")));
        assert!(e.to_string().contains("missing.xml"), "{e}");
    }
}
