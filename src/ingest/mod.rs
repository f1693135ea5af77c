//! Reading the sources: fetch at the edge (files, HTTP with conditional GET),
//! pure `parse_feed(&[u8])` for RSS, Atom and JSON Feed, then normalisation into
//! [`Article`]s. One broken source never stops the others.

mod cache;
mod fetch;
mod normalise;
mod parse;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::articles;
use crate::config::{Config, Source, SourceLocation};
use crate::domain::Article;

pub use cache::{Cache, CachedFeed};
pub use fetch::{fetch_url, read_file, FetchError, Fetched};
pub use normalise::{normalise, SourceInfo, SUMMARY_MAX_CHARS, TITLE_MAX_CHARS};
pub use parse::{parse_feed, FeedError, RawItem};

/// Why one source gave no articles: it could not be read, or what it gave is
/// not a feed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Feed(#[from] FeedError),
}

/// Which source of the config gave nothing, where it was read, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("source {name:?} ({location}): {cause}")]
pub struct SourceFailure {
    pub name: String,
    /// The file or URL it was read from.
    pub location: String,
    pub cause: Arc<SourceError>,
}

/// How one source fared in a run.
#[derive(Debug, Clone)]
pub struct SourceReport {
    pub name: String,
    /// Articles taken from it.
    pub articles: usize,
    /// Why it failed, if it did: names the source and what to fix.
    pub error: Option<SourceFailure>,
}

/// Reads every source of `cfg` (concurrently), returns the normalised articles
/// (not yet deduplicated, not yet windowed) and a report per source.
///
/// Articles come out in source order, then feed order. Undated items are dated
/// when first seen (remembered in `fetch.cache_file`, as are the ETag and
/// Last-Modified of HTTP feeds).
pub async fn ingest(cfg: &Config, now: DateTime<Utc>) -> (Vec<Article>, Vec<SourceReport>) {
    let cache_path = cfg.resolve(&cfg.fetch.cache_file);
    let mut cache = Cache::load(&cache_path);
    let before = cache.clone();
    let client = fetch::client(&cfg.fetch);

    let fetched: Vec<Result<Fetched, FetchError>> = futures::stream::iter(cfg.sources.iter())
        .map(|s| {
            let cached = match s.location(&cfg.base_dir) {
                SourceLocation::Url(u) => cache.feeds.get(u.as_str()).cloned(),
                SourceLocation::Path(_) => None,
            };
            let client = client.as_ref();
            async move {
                match s.location(&cfg.base_dir) {
                    SourceLocation::Path(p) => read_file(&p, cfg.fetch.max_bytes)
                        .await
                        .map(|bytes| Fetched::Body { bytes, cache: None }),
                    SourceLocation::Url(u) => {
                        let client = client.map_err(|e| FetchError::from(e.clone()))?;
                        fetch_url(client, u.as_str(), cached.as_ref(), &cfg.fetch).await
                    }
                }
            }
        })
        .buffered(cfg.fetch.concurrency.max(1))
        .collect()
        .await;

    let mut articles = Vec::new();
    let mut reports = Vec::new();
    let mut urls = BTreeSet::new();
    for (source, result) in cfg.sources.iter().zip(fetched) {
        let location = match source.location(&cfg.base_dir) {
            SourceLocation::Url(u) => {
                urls.insert(u.to_string());
                u.to_string()
            }
            SourceLocation::Path(p) => p.display().to_string(),
        };
        let outcome = result.map_err(SourceError::from).and_then(|f| {
            let items = parse_feed(f.bytes())?;
            if let (SourceLocation::Url(u), Fetched::Body { cache: c, .. }) =
                (source.location(&cfg.base_dir), &f)
            {
                match c {
                    Some(c) => cache.feeds.insert(u.to_string(), c.clone()),
                    None => cache.feeds.remove(u.as_str()),
                };
            }
            Ok(items)
        });
        match outcome {
            Ok(items) => {
                let got = articles_of(source, &items, &mut cache, now, cfg);
                reports.push(SourceReport {
                    name: source.name.clone(),
                    articles: got.len(),
                    error: None,
                });
                articles.extend(got);
            }
            Err(cause) => {
                tracing::debug!(source = %source.name, "{location}: {cause}");
                reports.push(SourceReport {
                    name: source.name.clone(),
                    articles: 0,
                    error: Some(SourceFailure {
                        name: source.name.clone(),
                        location,
                        cause: Arc::new(cause),
                    }),
                });
            }
        }
    }

    cache.prune(now, &urls);
    if cache != before {
        if let Err(e) = cache.save(&cache_path) {
            tracing::warn!(
                "cannot write the fetch cache {}: {e}; undated items may get a new date next run",
                cache_path.display()
            );
        }
    }
    (articles, reports)
}

/// Normalises the items of one source; undated ones take their first-seen date.
fn articles_of(
    source: &Source,
    items: &[RawItem],
    cache: &mut Cache,
    now: DateTime<Utc>,
    cfg: &Config,
) -> Vec<Article> {
    let info = SourceInfo {
        name: &source.name,
        category: source.category.as_deref(),
        weight: source.weight,
    };
    items
        .iter()
        .filter_map(|item| {
            let published = match item.published {
                Some(t) => t,
                None => cache.first_seen(&item_key(&source.name, item), now),
            };
            normalise(item, &info, published, cfg.newsletter.words_per_minute)
        })
        .collect()
}

/// Identifies an item across runs: its source and its link, else its title.
fn item_key(source: &str, item: &RawItem) -> String {
    let what = item
        .link
        .as_deref()
        .and_then(articles::canonical_url)
        .or_else(|| item.title.as_deref().map(articles::clean_text))
        .or_else(|| item.summary.as_deref().map(articles::clean_text))
        .unwrap_or_default();
    format!("{source}\u{1f}{what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::path::{Path, PathBuf};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/feeds")
            .join(name)
    }

    fn config(dir: &Path, sources: &[(&str, String)], extra: &str) -> Config {
        let mut text = String::from(
            "[newsletter]\nname = \"L'Essentiel\"\ntimezone = \"Europe/Paris\"\n\
             base_url = \"https://news.example.com/\"\n",
        );
        text.push_str(extra);
        for (name, loc) in sources {
            let key = if loc.starts_with("http") {
                "url"
            } else {
                "path"
            };
            text.push_str(&format!(
                "\n[[sources]]\nname = \"{name}\"\n{key} = {loc:?}\ncategory = \"Monde\"\n"
            ));
        }
        Config::parse(&text, dir).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 6, 0, 0).unwrap()
    }

    fn assert_clean(a: &Article) {
        for (field, text) in [
            ("title", &a.title),
            ("summary", &a.summary),
            ("category", &a.category),
        ] {
            assert!(!text.chars().any(char::is_control), "{field}: {text:?}");
            let lower = text.to_lowercase();
            for bad in [
                "<",
                ">",
                "script",
                "alert",
                "onerror",
                "onclick",
                "javascript",
                "body{",
            ] {
                assert!(!lower.contains(bad), "{field} contains {bad:?}: {text:?}");
            }
            assert_eq!(text.trim(), text.as_str());
            assert!(!text.contains("  "), "{field}: {text:?}");
            assert!(!text.contains('\u{202E}') && !text.contains('\u{200B}'));
        }
        if let Some(u) = &a.url {
            assert!(u.starts_with("https://") || u.starts_with("http://"), "{u}");
            for bad in ["utm_", "fbclid", "gclid", "#"] {
                assert!(!u.contains(bad), "{u}");
            }
        }
    }

    #[tokio::test]
    async fn hostile_feeds_come_out_as_clean_text_and_safe_links() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[
                ("Hostile", fixture("hostile.xml").display().to_string()),
                ("HostileJson", fixture("hostile.json").display().to_string()),
            ],
            "",
        );
        let (articles, reports) = ingest(&cfg, now()).await;
        assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
        // The item whose only text is a script is dropped; the others stay.
        assert_eq!(reports[0].articles, 9);
        assert_eq!(reports[1].articles, 2);
        for a in &articles {
            assert_clean(a);
        }
        let by_title = |t: &str| {
            articles
                .iter()
                .find(|a| a.title == t)
                .unwrap_or_else(|| panic!("no article titled {t:?} in {articles:#?}"))
        };
        let a = by_title("Tags in the title");
        assert_eq!(a.summary, "Before after");
        assert_eq!(a.category, "Monde");
        assert_eq!(
            a.url.as_deref(),
            Some("https://hostile.example/script?id=1")
        );
        assert_eq!(
            by_title("Image with an event handler").summary,
            "Clean words here."
        );
        assert_eq!(by_title("A link with a dangerous scheme").url, None);
        assert_eq!(by_title("A data URL link").url, None);
        assert_eq!(by_title("A relative link").url, None);
        let crlf = by_title("Line break in the title with a tab");
        assert_eq!(crlf.summary, "Bcc: victim@example.com Subject: injected");
        assert_eq!(by_title("Double escaped").summary, "Double-escaped markup");
        by_title("Biditxt.exe and zerowidth");
        assert_eq!(by_title("An undated item").published, now());
        let json = by_title("JSON title clean");
        assert_eq!(json.url, None);
        assert_eq!(json.summary, "Body text.");
        let tracked = by_title("Tracking parameters and CRLF");
        assert_eq!(
            tracked.url.as_deref(),
            Some("https://hostile.example/json?page=2")
        );
        assert_eq!(tracked.summary, "Bold & entities été");
        assert_eq!(tracked.category, "Culture");
    }

    #[tokio::test]
    async fn a_failing_source_is_reported_by_name_and_cause_and_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[
                ("Cassé", fixture("broken.xml").display().to_string()),
                (
                    "Mal encodé",
                    fixture("wrong-encoding.xml").display().to_string(),
                ),
                ("Absent", "missing.xml".to_string()),
                ("Latin", fixture("latin1.xml").display().to_string()),
                ("Vide", fixture("hostile.xml").display().to_string()),
            ],
            "",
        );
        let (articles, reports) = ingest(&cfg, now()).await;
        let err = |i: usize| {
            reports[i]
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // What each source's failure is, by its variant.
        let kinds: Vec<&str> = reports
            .iter()
            .map(|r| match r.error.as_ref().map(|e| &*e.cause) {
                None => "read",
                Some(SourceError::Feed(FeedError::Unreadable { .. })) => "unreadable",
                Some(SourceError::Feed(FeedError::Encoding { .. })) => "encoding",
                Some(SourceError::Fetch(FetchError::Open { .. })) => "missing",
                Some(other) => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(kinds, ["unreadable", "encoding", "missing", "read", "read"]);
        assert!(
            err(0).contains("\"Cassé\"") && err(0).contains("not a readable"),
            "{}",
            err(0)
        );
        assert!(
            err(1).contains("\"Mal encodé\"") && err(1).contains("UTF-8"),
            "{}",
            err(1)
        );
        assert!(
            err(2).contains("\"Absent\"") && err(2).contains("missing.xml"),
            "{}",
            err(2)
        );
        assert!(reports[3].error.is_none(), "{:?}", reports[3].error);
        assert!(reports[4].error.is_none(), "{:?}", reports[4].error);
        assert!(articles.iter().any(|a| a.title == "Café crème et thé"));
        assert_eq!(articles.len(), reports[3].articles + reports[4].articles);
    }

    #[tokio::test]
    async fn a_huge_item_is_cut_down_and_a_feed_over_the_cap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let word = "information ";
        let body = word.repeat(300_000); // ~3.6 MB
        let feed = format!(
            "<rss version=\"2.0\"><channel><title>Big</title><link>https://big.example/</link>\
             <description>d</description><item><title>{}</title><link>https://big.example/1</link>\
             <pubDate>Thu, 26 Nov 2026 10:00:00 +0000</pubDate><description>{body}</description>\
             </item></channel></rss>",
            word.repeat(5_000)
        );
        std::fs::write(dir.path().join("big.xml"), &feed).unwrap();
        let cfg = config(dir.path(), &[("Big", "big.xml".to_string())], "");
        let (articles, reports) = ingest(&cfg, now()).await;
        assert!(reports[0].error.is_none(), "{:?}", reports[0].error);
        let a = &articles[0];
        assert!(a.title.chars().count() <= TITLE_MAX_CHARS);
        assert!(a.summary.chars().count() <= SUMMARY_MAX_CHARS);
        assert!(a.summary.ends_with("information…"), "{}", a.summary);
        assert_eq!(a.reading_minutes, 300_000u32.div_ceil(230));

        let small = config(
            dir.path(),
            &[("Big", "big.xml".to_string())],
            "[fetch]\nmax_bytes = 1000000\n",
        );
        let (articles, reports) = ingest(&small, now()).await;
        assert!(articles.is_empty());
        let failure = reports[0].error.as_ref().unwrap();
        assert!(
            matches!(
                *failure.cause,
                SourceError::Fetch(FetchError::TooBig {
                    max_bytes: 1_000_000
                })
            ),
            "{failure:?}"
        );
        assert!(failure.to_string().contains("fetch.max_bytes"), "{failure}");
    }

    #[tokio::test]
    async fn an_undated_item_keeps_the_date_it_was_first_seen_across_runs() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[("Hostile", fixture("hostile.xml").display().to_string())],
            "",
        );
        let undated = |v: &[Article]| {
            v.iter()
                .find(|a| a.title == "An undated item")
                .unwrap()
                .published
        };
        let (first, _) = ingest(&cfg, now()).await;
        assert_eq!(undated(&first), now());
        assert!(dir.path().join(".digestif-cache.json").exists());
        let later = now() + chrono::Duration::hours(5);
        let (second, _) = ingest(&cfg, later).await;
        assert_eq!(undated(&second), now());
    }

    #[tokio::test]
    async fn a_304_reuses_the_feed_remembered_in_the_cache_file() {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;

        let rss =
            std::fs::read_to_string(fixture("latin1.xml").with_file_name("hostile.xml")).unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let not_modified = Arc::new(AtomicUsize::new(0));
        let (h, nm) = (hits.clone(), not_modified.clone());
        let app = axum::Router::new().route(
            "/feed.xml",
            axum::routing::get(move |headers: HeaderMap| {
                let (h, nm, rss) = (h.clone(), nm.clone(), rss.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if headers.get("if-modified-since").is_some() {
                        nm.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    ([("last-modified", "Thu, 26 Nov 2026 15:00:00 GMT")], rss).into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            dir.path(),
            &[("Http", format!("http://{addr}/feed.xml"))],
            "[fetch]\ncache_file = \"state/cache.json\"\n",
        );
        let (first, r1) = ingest(&cfg, now()).await;
        assert!(r1[0].error.is_none(), "{:?}", r1[0].error);
        assert!(dir.path().join("state/cache.json").exists());
        let (second, r2) = ingest(&cfg, now()).await;
        assert!(r2[0].error.is_none(), "{:?}", r2[0].error);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        assert_eq!(not_modified.load(Ordering::SeqCst), 1);
        assert_eq!(first, second);
        assert_eq!(first.len(), 9);
    }
}
